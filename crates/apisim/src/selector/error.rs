//! Why a selector was rejected.

/// Why a label or field selector was rejected.
///
/// The messages are shown to API clients inside a `Status` object, so each one says what is
/// wrong and what a valid form looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The selector string does not follow the selector grammar.
    #[error(
        "invalid label selector {selector:?}: at position {position} found {found}, expected {expected}; \
         valid forms are key=value, key==value, key!=value, key in (v1,v2), key notin (v1,v2), key, !key, \
         separated by commas"
    )]
    Syntax {
        /// The whole selector as received.
        selector: String,
        /// Byte offset of the offending token.
        position: usize,
        /// The offending token, quoted, or `end of input`.
        found: String,
        /// What the parser would have accepted there.
        expected: &'static str,
    },
    /// An `in (...)` or `notin (...)` list was opened but never closed.
    #[error(
        "invalid label selector {selector:?}: the value list opened at position {position} is not closed; \
         add ')' after the last value, as in key in (v1,v2)"
    )]
    UnbalancedParens {
        /// The whole selector as received.
        selector: String,
        /// Byte offset of the `(`.
        position: usize,
    },
    /// A requirement has an operator but no key in front of it.
    #[error(
        "invalid label selector {selector:?}: the requirement at position {position} has an empty key; \
         write it as key=value"
    )]
    EmptyKey {
        /// The whole selector as received.
        selector: String,
        /// Byte offset where the key was expected.
        position: usize,
    },
    /// A label key is not a valid qualified name.
    #[error(
        "invalid label key {key:?}: {reason}; a key is an optional DNS subdomain prefix and '/', followed by a \
         name of at most 63 characters that starts and ends with a letter or digit and otherwise contains \
         only letters, digits, '-', '_' and '.' (for example app.kubernetes.io/name)"
    )]
    InvalidKey {
        /// The rejected key.
        key: String,
        /// What exactly is wrong with it.
        reason: String,
    },
    /// A label value is not valid.
    #[error(
        "invalid value {value:?} for label {key:?}: {reason}; a label value is empty or at most 63 characters \
         that start and end with a letter or digit and otherwise contain only letters, digits, '-', '_' and '.'"
    )]
    InvalidValue {
        /// The key the value belongs to.
        key: String,
        /// The rejected value.
        value: String,
        /// What exactly is wrong with it.
        reason: String,
    },
    /// `in` / `notin` (or `In` / `NotIn`) with no values.
    #[error(
        "the {operator} requirement on label {key:?} has no values; list at least one value, \
         as in {key} {operator} (v1,v2)"
    )]
    EmptyValues {
        /// The key of the requirement.
        key: String,
        /// The operator as spelled by the client.
        operator: String,
    },
    /// `Exists` / `DoesNotExist` with values.
    #[error(
        "the {operator} requirement on label {key:?} must not have values; remove the values list"
    )]
    UnexpectedValues {
        /// The key of the requirement.
        key: String,
        /// The operator as spelled by the client.
        operator: String,
    },
    /// `>` or `<` compared against something that is not an integer.
    #[error(
        "the value {value:?} compared with label {key:?} must be an integer for the '>' and '<' operators"
    )]
    NotAnInteger {
        /// The key of the requirement.
        key: String,
        /// The rejected value.
        value: String,
    },
    /// A `matchExpressions` operator that Kubernetes does not define.
    #[error(
        "unknown operator {operator:?} in matchExpressions for label {key:?}; use one of In, NotIn, Exists, \
         DoesNotExist"
    )]
    UnknownOperator {
        /// The key of the requirement.
        key: String,
        /// The operator as received.
        operator: String,
    },
    /// A `metav1.LabelSelector` object has the wrong shape.
    #[error("invalid label selector object: {field} {problem}")]
    BadObject {
        /// JSON path of the offending field, such as `matchExpressions[1].values`.
        field: String,
        /// What is wrong, and what was expected.
        problem: String,
    },
    /// A field selector term is malformed.
    #[error(
        "invalid field selector {selector:?}: {problem}; valid terms are field=value, field==value and \
         field!=value separated by commas, such as metadata.name=web,status.phase!=Running"
    )]
    FieldSyntax {
        /// The whole selector as received.
        selector: String,
        /// What is wrong with it.
        problem: String,
    },
}
