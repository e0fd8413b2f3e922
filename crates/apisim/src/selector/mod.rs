//! Label and field selectors, as accepted by `?labelSelector=` and `?fieldSelector=` and as
//! stored in `metav1.LabelSelector` objects (Deployment, ReplicaSet, StatefulSet selectors).
//!
//! Everything here is pure: parsing never panics and never allocates more than a small
//! multiple of the input size, because the inputs come straight from untrusted query strings
//! and request bodies.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

/// Longest label name (the part after the optional `prefix/`) and label value.
const MAX_NAME_LEN: usize = 63;
/// Longest DNS subdomain allowed as a label key prefix.
const MAX_PREFIX_LEN: usize = 253;

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

// ---------------------------------------------------------------------------------------------
// Label selectors
// ---------------------------------------------------------------------------------------------

/// The operator of one label selector requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    /// `key=value` or `key==value`: the label is present with that value.
    Equals,
    /// `key!=value`: the label is absent or has another value.
    NotEquals,
    /// `key in (a,b)`: the label is present with one of the values.
    In,
    /// `key notin (a,b)`: the label is absent or has none of the values.
    NotIn,
    /// `key`: the label is present, whatever its value.
    Exists,
    /// `!key`: the label is absent.
    DoesNotExist,
    /// `key>n`: the label is present and is an integer greater than `n`.
    GreaterThan,
    /// `key<n`: the label is present and is an integer less than `n`.
    LessThan,
}

/// One requirement of a label selector: a key, an operator and the operator's values.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Requirement {
    key: String,
    operator: Operator,
    /// Sorted and without duplicates.
    values: Vec<String>,
}

impl Requirement {
    /// Builds a requirement after checking the key, the values and their number.
    pub fn new(
        key: &str,
        operator: Operator,
        values: impl IntoIterator<Item = String>,
    ) -> Result<Self, SelectorError> {
        validate_label_key(key)?;
        let mut values: Vec<String> = values.into_iter().collect();
        values.sort();
        values.dedup();
        let spelled = operator_word(operator);
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => {
                return Err(SelectorError::EmptyValues {
                    key: key.to_owned(),
                    operator: spelled.to_owned(),
                });
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                return Err(SelectorError::UnexpectedValues {
                    key: key.to_owned(),
                    operator: spelled.to_owned(),
                });
            }
            Operator::Equals | Operator::NotEquals | Operator::GreaterThan | Operator::LessThan
                if values.len() != 1 =>
            {
                return Err(SelectorError::BadObject {
                    field: key.to_owned(),
                    problem: format!("needs exactly one value for the {spelled} operator"),
                });
            }
            _ => {}
        }
        for value in &values {
            if matches!(operator, Operator::GreaterThan | Operator::LessThan) {
                if value.parse::<i64>().is_err() {
                    return Err(SelectorError::NotAnInteger {
                        key: key.to_owned(),
                        value: value.clone(),
                    });
                }
            } else {
                validate_label_value(key, value)?;
            }
        }
        Ok(Self {
            key: key.to_owned(),
            operator,
            values,
        })
    }

    /// The label key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The operator.
    pub fn operator(&self) -> Operator {
        self.operator
    }

    /// The values, sorted and without duplicates (empty for `Exists` and `DoesNotExist`).
    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// Whether a set of labels satisfies this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let actual = labels.get(&self.key);
        let listed = |v: &String| self.values.iter().any(|w| w == v);
        match self.operator {
            Operator::Equals | Operator::In => actual.is_some_and(listed),
            Operator::NotEquals | Operator::NotIn => !actual.is_some_and(listed),
            Operator::Exists => actual.is_some(),
            Operator::DoesNotExist => actual.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(actual), Some(bound)) = (actual, self.values.first()) else {
                    return false;
                };
                let (Ok(actual), Ok(bound)) = (actual.parse::<i64>(), bound.parse::<i64>()) else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    actual > bound
                } else {
                    actual < bound
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = self.values.first().map(String::as_str).unwrap_or("");
        match self.operator {
            Operator::Equals => write!(f, "{}={first}", self.key),
            Operator::NotEquals => write!(f, "{}!={first}", self.key),
            Operator::GreaterThan => write!(f, "{}>{first}", self.key),
            Operator::LessThan => write!(f, "{}<{first}", self.key),
            Operator::Exists => f.write_str(&self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
            // `k in ()` would not parse back, and a set holding only the empty value means
            // exactly `k=` / `k!=`.
            Operator::In if self.values.len() == 1 && first.is_empty() => {
                write!(f, "{}=", self.key)
            }
            Operator::NotIn if self.values.len() == 1 && first.is_empty() => {
                write!(f, "{}!=", self.key)
            }
            Operator::In | Operator::NotIn => {
                write!(f, "{} {} (", self.key, operator_word(self.operator))?;
                f.write_str(&self.values.join(","))?;
                f.write_str(")")
            }
        }
    }
}

/// A label selector: a conjunction of requirements. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct LabelSelector {
    /// Sorted by key (stable), like the Kubernetes parser does.
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// The selector that matches every object.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Parses the string form used by `?labelSelector=` (already URL-decoded).
    ///
    /// Accepts `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, `k>n` and
    /// `k<n`, separated by commas, with optional whitespace around tokens. The empty (or blank)
    /// string selects everything.
    pub fn parse(selector: &str) -> Result<Self, SelectorError> {
        let mut parser = Parser {
            selector,
            tokens: lex(selector),
            pos: 0,
        };
        let mut requirements = parser.parse_all()?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self { requirements })
    }

    /// Builds a selector from a `metav1.LabelSelector` JSON object (`matchLabels` and
    /// `matchExpressions`).
    ///
    /// `null` and `{}` give the empty selector, which matches everything; callers that must
    /// refuse an empty selector (a Deployment's `spec.selector`, for example) check
    /// [`LabelSelector::is_empty`].
    pub fn from_json(value: &Value) -> Result<Self, SelectorError> {
        let obj = match value {
            Value::Null => return Ok(Self::everything()),
            Value::Object(obj) => obj,
            other => {
                return Err(SelectorError::BadObject {
                    field: "selector".into(),
                    problem: format!(
                        "must be an object with matchLabels and/or matchExpressions, not {}",
                        json_kind(other)
                    ),
                });
            }
        };
        let mut requirements = Vec::new();
        match obj.get("matchLabels") {
            None | Some(Value::Null) => {}
            Some(Value::Object(labels)) => {
                for (key, value) in labels {
                    let Value::String(value) = value else {
                        return Err(SelectorError::BadObject {
                            field: format!("matchLabels.{key}"),
                            problem: format!("must be a string, not {}", json_kind(value)),
                        });
                    };
                    requirements.push(Requirement::new(key, Operator::Equals, [value.clone()])?);
                }
            }
            Some(other) => {
                return Err(SelectorError::BadObject {
                    field: "matchLabels".into(),
                    problem: format!(
                        "must be an object mapping label keys to values, not {}",
                        json_kind(other)
                    ),
                });
            }
        }
        match obj.get("matchExpressions") {
            None | Some(Value::Null) => {}
            Some(Value::Array(exprs)) => {
                for (i, expr) in exprs.iter().enumerate() {
                    requirements.push(expression_from_json(i, expr)?);
                }
            }
            Some(other) => {
                return Err(SelectorError::BadObject {
                    field: "matchExpressions".into(),
                    problem: format!(
                        "must be a list of {{key, operator, values}} objects, not {}",
                        json_kind(other)
                    ),
                });
            }
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self { requirements })
    }

    /// A selector requiring every label of `labels` (a Service's `spec.selector`, or
    /// `matchLabels` alone). The pairs are validated like those of a parsed selector.
    pub fn from_map(labels: &BTreeMap<String, String>) -> Result<Self, SelectorError> {
        let requirements = labels
            .iter()
            .map(|(k, v)| Requirement::new(k, Operator::Equals, [v.clone()]))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { requirements })
    }

    /// Whether the selector has no requirements (and so matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether a set of labels satisfies every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether an object (its `metadata.labels`) satisfies every requirement. An object without
    /// labels is treated as having none.
    pub fn matches_object(&self, obj: &Value) -> bool {
        if self.requirements.is_empty() {
            return true;
        }
        self.matches(&labels_of(obj))
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// The labels of an object (`metadata.labels`); values that are not strings are skipped.
pub fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

fn expression_from_json(index: usize, expr: &Value) -> Result<Requirement, SelectorError> {
    let field = |name: &str| format!("matchExpressions[{index}].{name}");
    let Value::Object(expr) = expr else {
        return Err(SelectorError::BadObject {
            field: format!("matchExpressions[{index}]"),
            problem: format!(
                "must be an object with key, operator and values, not {}",
                json_kind(expr)
            ),
        });
    };
    let key = match expr.get("key") {
        Some(Value::String(k)) => k.as_str(),
        None | Some(Value::Null) => {
            return Err(SelectorError::BadObject {
                field: field("key"),
                problem: "is required; set it to the label key to test".into(),
            });
        }
        Some(other) => {
            return Err(SelectorError::BadObject {
                field: field("key"),
                problem: format!("must be a string, not {}", json_kind(other)),
            });
        }
    };
    let operator_name = match expr.get("operator") {
        Some(Value::String(op)) => op.as_str(),
        None | Some(Value::Null) => {
            return Err(SelectorError::BadObject {
                field: field("operator"),
                problem: "is required; use one of In, NotIn, Exists, DoesNotExist".into(),
            });
        }
        Some(other) => {
            return Err(SelectorError::BadObject {
                field: field("operator"),
                problem: format!("must be a string, not {}", json_kind(other)),
            });
        }
    };
    let operator = match operator_name {
        "In" => Operator::In,
        "NotIn" => Operator::NotIn,
        "Exists" => Operator::Exists,
        "DoesNotExist" => Operator::DoesNotExist,
        _ => {
            return Err(SelectorError::UnknownOperator {
                key: key.to_owned(),
                operator: operator_name.to_owned(),
            });
        }
    };
    let values = match expr.get("values") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(values)) => values
            .iter()
            .enumerate()
            .map(|(j, v)| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(SelectorError::BadObject {
                    field: format!("matchExpressions[{index}].values[{j}]"),
                    problem: format!("must be a string, not {}", json_kind(other)),
                }),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(other) => {
            return Err(SelectorError::BadObject {
                field: field("values"),
                problem: format!("must be a list of strings, not {}", json_kind(other)),
            });
        }
    };
    // Report the operator the way the client spelled it.
    Requirement::new(key, operator, values).map_err(|e| match e {
        SelectorError::EmptyValues { key, .. } => SelectorError::EmptyValues {
            key,
            operator: operator_name.to_owned(),
        },
        SelectorError::UnexpectedValues { key, .. } => SelectorError::UnexpectedValues {
            key,
            operator: operator_name.to_owned(),
        },
        other => other,
    })
}

fn operator_word(op: Operator) -> &'static str {
    match op {
        Operator::Equals => "=",
        Operator::NotEquals => "!=",
        Operator::In => "in",
        Operator::NotIn => "notin",
        Operator::Exists => "exists",
        Operator::DoesNotExist => "!",
        Operator::GreaterThan => ">",
        Operator::LessThan => "<",
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

// ----- validation -----------------------------------------------------------------------------

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// Checks `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?` and the length limit; returns what is wrong.
fn name_problem(name: &str) -> Option<String> {
    if name.len() > MAX_NAME_LEN {
        return Some(format!(
            "it is {} characters long, the limit is {MAX_NAME_LEN}",
            name.len()
        ));
    }
    if let Some(bad) = name.chars().find(|c| !is_name_char(*c)) {
        return Some(format!("it contains the character {bad:?}"));
    }
    let starts_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let ends_ok = name
        .chars()
        .next_back()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if !starts_ok || !ends_ok {
        return Some("it must start and end with a letter or digit".into());
    }
    None
}

/// Checks a DNS-1123 subdomain (lowercase labels separated by dots).
fn subdomain_problem(prefix: &str) -> Option<String> {
    if prefix.len() > MAX_PREFIX_LEN {
        return Some(format!(
            "the prefix is {} characters long, the limit is {MAX_PREFIX_LEN}",
            prefix.len()
        ));
    }
    for label in prefix.split('.') {
        let ok = !label.is_empty()
            && label
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Some(format!(
                "the prefix {prefix:?} is not a lowercase DNS subdomain (such as example.com)"
            ));
        }
    }
    None
}

fn validate_label_key(key: &str) -> Result<(), SelectorError> {
    let invalid = |reason: String| SelectorError::InvalidKey {
        key: key.to_owned(),
        reason,
    };
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if name.contains('/') {
        return Err(invalid("it contains more than one '/'".into()));
    }
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Err(invalid("the prefix before '/' is empty".into()));
        }
        if let Some(problem) = subdomain_problem(prefix) {
            return Err(invalid(problem));
        }
    }
    if name.is_empty() {
        return Err(invalid("the name is empty".into()));
    }
    if let Some(problem) = name_problem(name) {
        return Err(invalid(problem));
    }
    Ok(())
}

fn validate_label_value(key: &str, value: &str) -> Result<(), SelectorError> {
    if value.is_empty() {
        return Ok(());
    }
    match name_problem(value) {
        None => Ok(()),
        Some(reason) => Err(SelectorError::InvalidValue {
            key: key.to_owned(),
            value: value.to_owned(),
            reason,
        }),
    }
}

// ----- lexer and parser ----------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok<'a> {
    Ident(&'a str),
    Eq,
    DoubleEq,
    NotEq,
    Bang,
    Open,
    Close,
    Comma,
    In,
    NotIn,
    Gt,
    Lt,
    End,
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

/// Splits a selector into tokens with their byte offsets; always ends with `End`.
fn lex(input: &str) -> Vec<(usize, Tok<'_>)> {
    let mut out = Vec::new();
    let mut chars = input.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if c.is_whitespace() {
            continue;
        }
        let tok = match c {
            '(' => Tok::Open,
            ')' => Tok::Close,
            ',' => Tok::Comma,
            '>' => Tok::Gt,
            '<' => Tok::Lt,
            '=' | '!' => {
                if chars.peek().is_some_and(|(_, n)| *n == '=') {
                    chars.next();
                    if c == '=' { Tok::DoubleEq } else { Tok::NotEq }
                } else if c == '=' {
                    Tok::Eq
                } else {
                    Tok::Bang
                }
            }
            _ => {
                let mut end = at + c.len_utf8();
                while let Some(&(i, n)) = chars.peek() {
                    if n.is_whitespace() || is_special(n) {
                        break;
                    }
                    end = i + n.len_utf8();
                    chars.next();
                }
                match &input[at..end] {
                    "in" => Tok::In,
                    "notin" => Tok::NotIn,
                    word => Tok::Ident(word),
                }
            }
        };
        out.push((at, tok));
    }
    out.push((input.len(), Tok::End));
    out
}

fn describe(tok: Tok<'_>) -> String {
    match tok {
        Tok::Ident(s) => format!("{s:?}"),
        Tok::Eq => "'='".into(),
        Tok::DoubleEq => "'=='".into(),
        Tok::NotEq => "'!='".into(),
        Tok::Bang => "'!'".into(),
        Tok::Open => "'('".into(),
        Tok::Close => "')'".into(),
        Tok::Comma => "','".into(),
        Tok::In => "'in'".into(),
        Tok::NotIn => "'notin'".into(),
        Tok::Gt => "'>'".into(),
        Tok::Lt => "'<'".into(),
        Tok::End => "end of input".into(),
    }
}

struct Parser<'a> {
    selector: &'a str,
    tokens: Vec<(usize, Tok<'a>)>,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> (usize, Tok<'a>) {
        self.tokens
            .get(self.pos)
            .copied()
            .unwrap_or((self.selector.len(), Tok::End))
    }

    fn next(&mut self) -> (usize, Tok<'a>) {
        let t = self.peek();
        if self.pos < self.tokens.len() {
            self.pos += 1;
        }
        t
    }

    fn syntax(&self, (position, tok): (usize, Tok<'_>), expected: &'static str) -> SelectorError {
        SelectorError::Syntax {
            selector: self.selector.to_owned(),
            position,
            found: describe(tok),
            expected,
        }
    }

    fn parse_all(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut out = Vec::new();
        if self.peek().1 == Tok::End {
            return Ok(out);
        }
        loop {
            out.push(self.parse_requirement()?);
            match self.next() {
                (_, Tok::End) => return Ok(out),
                (_, Tok::Comma) => {
                    let after = self.peek();
                    if after.1 == Tok::End {
                        return Err(self.syntax(after, "a requirement after ','"));
                    }
                }
                other => return Err(self.syntax(other, "',' or end of input")),
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, SelectorError> {
        let (position, tok) = self.next();
        match tok {
            Tok::Bang => {
                let key = match self.next() {
                    (_, Tok::Ident(k)) => k,
                    (_, Tok::In) => "in",
                    (_, Tok::NotIn) => "notin",
                    other => return Err(self.syntax(other, "a label key after '!'")),
                };
                Requirement::new(key, Operator::DoesNotExist, [])
            }
            Tok::Ident(key) => self.parse_restriction(key),
            Tok::Eq | Tok::DoubleEq | Tok::NotEq | Tok::Gt | Tok::Lt => {
                Err(SelectorError::EmptyKey {
                    selector: self.selector.to_owned(),
                    position,
                })
            }
            _ => Err(self.syntax((position, tok), "a label key or '!key'")),
        }
    }

    fn parse_restriction(&mut self, key: &'a str) -> Result<Requirement, SelectorError> {
        let tok = self.peek();
        match tok.1 {
            Tok::Comma | Tok::End => Requirement::new(key, Operator::Exists, []),
            Tok::Eq | Tok::DoubleEq => {
                self.next();
                let value = self.parse_exact_value()?;
                Requirement::new(key, Operator::Equals, [value])
            }
            Tok::NotEq => {
                self.next();
                let value = self.parse_exact_value()?;
                Requirement::new(key, Operator::NotEquals, [value])
            }
            Tok::Gt | Tok::Lt => {
                self.next();
                let op = if tok.1 == Tok::Gt {
                    Operator::GreaterThan
                } else {
                    Operator::LessThan
                };
                let value = self.parse_exact_value()?;
                Requirement::new(key, op, [value])
            }
            Tok::In | Tok::NotIn => {
                self.next();
                let op = if tok.1 == Tok::In {
                    Operator::In
                } else {
                    Operator::NotIn
                };
                let values = self.parse_value_list()?;
                Requirement::new(key, op, values)
            }
            _ => Err(self.syntax(
                tok,
                "'=', '==', '!=', 'in', 'notin', ',' or end of input after the key",
            )),
        }
    }

    /// The value after `=`, `==`, `!=`, `>` or `<`; nothing (end or `,`) means the empty value.
    fn parse_exact_value(&mut self) -> Result<String, SelectorError> {
        let tok = self.peek();
        let value = match tok.1 {
            Tok::Comma | Tok::End => return Ok(String::new()),
            Tok::Ident(v) => v,
            Tok::In => "in",
            Tok::NotIn => "notin",
            _ => return Err(self.syntax(tok, "a value")),
        };
        self.next();
        Ok(value.to_owned())
    }

    /// `( v1, v2, ... )`; empty entries between commas stand for the empty value.
    fn parse_value_list(&mut self) -> Result<Vec<String>, SelectorError> {
        let open = self.next();
        if open.1 != Tok::Open {
            return Err(self.syntax(open, "'(' to start the list of values"));
        }
        let mut values = Vec::new();
        let mut expecting_value = true;
        let mut saw_comma = false;
        loop {
            let tok = self.next();
            match tok.1 {
                Tok::Ident(v) if expecting_value => {
                    values.push(v.to_owned());
                    expecting_value = false;
                }
                Tok::In | Tok::NotIn if expecting_value => {
                    values.push(if tok.1 == Tok::In { "in" } else { "notin" }.to_owned());
                    expecting_value = false;
                }
                Tok::Comma => {
                    if expecting_value {
                        values.push(String::new());
                    }
                    expecting_value = true;
                    saw_comma = true;
                }
                Tok::Close => {
                    if expecting_value && saw_comma {
                        values.push(String::new());
                    }
                    return Ok(values);
                }
                Tok::End => {
                    return Err(SelectorError::UnbalancedParens {
                        selector: self.selector.to_owned(),
                        position: open.0,
                    });
                }
                _ if expecting_value => return Err(self.syntax(tok, "a value, ',' or ')'")),
                _ => return Err(self.syntax(tok, "',' or ')'")),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Field selectors
// ---------------------------------------------------------------------------------------------

/// One `field=value` / `field!=value` term of a field selector.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldRequirement {
    field: String,
    negated: bool,
    value: String,
}

impl FieldRequirement {
    /// The dotted field path, such as `metadata.name`.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// The value compared against.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// `true` for `!=`, `false` for `=` / `==`.
    pub fn is_negated(&self) -> bool {
        self.negated
    }

    /// Whether the object satisfies this term.
    pub fn matches(&self, obj: &Value) -> bool {
        (field_text(obj, &self.field) == self.value) != self.negated
    }
}

/// A field selector: a conjunction of `path=value` / `path!=value` terms. The empty selector
/// matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// The selector that matches every object.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Parses the string form used by `?fieldSelector=` (already URL-decoded).
    ///
    /// Terms are separated by `,`; each is `path=value`, `path==value` or `path!=value`.
    /// `\,`, `\=` and `\\` escape those characters inside values. Empty terms are ignored, so
    /// the empty string selects everything. Which fields are allowed depends on the kind and is
    /// left to the caller (see [`FieldSelector::fields`]).
    pub fn parse(selector: &str) -> Result<Self, SelectorError> {
        let syntax = |problem: String| SelectorError::FieldSyntax {
            selector: selector.to_owned(),
            problem,
        };
        let mut requirements = Vec::new();
        for term in split_unescaped(selector, ',') {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let Some((field, negated, raw_value)) = split_operator(term) else {
                return Err(syntax(format!(
                    "the term {term:?} has no '=', '==' or '!=' operator"
                )));
            };
            let field = field.trim();
            if field.is_empty() {
                return Err(syntax(format!(
                    "the term {term:?} has an empty field name; write it as field=value"
                )));
            }
            if field.contains('\\') {
                return Err(syntax(format!(
                    "the field name {field:?} contains a backslash; only values may be escaped"
                )));
            }
            let value = unescape(raw_value.trim()).map_err(syntax)?;
            requirements.push(FieldRequirement {
                field: field.to_owned(),
                negated,
                value,
            });
        }
        Ok(Self { requirements })
    }

    /// Whether the selector has no terms (and so matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The terms, in the order given.
    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// The field paths the selector uses, so the server can reject fields a kind does not
    /// support.
    pub fn fields(&self) -> impl Iterator<Item = &str> + '_ {
        self.requirements.iter().map(|r| r.field.as_str())
    }

    /// Whether the object satisfies every term. A missing field compares as the empty string;
    /// numbers and booleans compare by their JSON text (`true`, `3`).
    pub fn matches(&self, obj: &Value) -> bool {
        self.requirements.iter().all(|r| r.matches(obj))
    }

    /// The value the selector requires `field` to equal: the first `field=value` (or
    /// `==`) term, whatever other terms there are, as upstream's `RequiresExactMatch`.
    pub fn exact_match(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && !r.negated)
            .map(|r| r.value.as_str())
    }

    /// The name when the selector is exactly `metadata.name=<name>` (how clients watch or list
    /// a single object), otherwise `None`.
    pub fn single_name(&self) -> Option<&str> {
        match self.requirements.as_slice() {
            [only] if only.field == "metadata.name" && !only.negated => Some(&only.value),
            _ => None,
        }
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(&r.field)?;
            f.write_str(if r.negated { "!=" } else { "=" })?;
            for c in r.value.chars() {
                if matches!(c, '\\' | ',' | '=') {
                    f.write_str("\\")?;
                }
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// Splits on `sep` where it is not preceded by an escaping backslash.
fn split_unescaped(input: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in input.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(&input[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&input[start..]);
    parts
}

/// Finds the first unescaped operator; returns (field, negated, raw value).
fn split_operator(term: &str) -> Option<(&str, bool, &str)> {
    let mut escaped = false;
    let mut prev: Option<(usize, char)> = None;
    for (i, c) in term.char_indices() {
        if escaped {
            escaped = false;
            prev = None;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '=' => {
                if let Some((p, '!')) = prev {
                    return Some((&term[..p], true, &term[i + 1..]));
                }
                let rest = &term[i + 1..];
                let value = rest.strip_prefix('=').unwrap_or(rest);
                return Some((&term[..i], false, value));
            }
            _ => {}
        }
        prev = Some((i, c));
    }
    None
}

fn unescape(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(e @ ('\\' | ',' | '=')) => out.push(e),
            Some(other) => {
                return Err(format!(
                    "the value {raw:?} contains the invalid escape '\\{other}'; only \\\\, \\, and \\= are allowed"
                ));
            }
            None => {
                return Err(format!(
                    "the value {raw:?} ends with a lone backslash; write \\\\ for a backslash"
                ));
            }
        }
    }
    Ok(out)
}

/// The text a field selector compares against: strings as they are, numbers and booleans as
/// their JSON text, missing and `null` as the empty string.
fn field_text(obj: &Value, path: &str) -> String {
    let mut cur = obj;
    for part in path.split('.') {
        match cur.get(part) {
            Some(next) => cur = next,
            None => return String::new(),
        }
    }
    match cur {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn sel(s: &str) -> LabelSelector {
        LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    #[test]
    fn empty_selects_everything() {
        for s in ["", "   ", "\t"] {
            let selector = sel(s);
            assert!(selector.is_empty());
            assert!(selector.matches(&labels(&[])));
            assert!(selector.matches(&labels(&[("a", "b")])));
            assert_eq!(selector.to_string(), "");
        }
    }

    #[test]
    fn equality_operators() {
        let web = labels(&[("app", "web"), ("tier", "front")]);
        let db = labels(&[("app", "db")]);
        let none = labels(&[]);
        for s in ["app=web", "app==web", " app = web "] {
            assert!(sel(s).matches(&web), "{s}");
            assert!(!sel(s).matches(&db), "{s}");
            assert!(!sel(s).matches(&none), "{s}");
        }
        let ne = sel("app!=web");
        assert!(!ne.matches(&web));
        assert!(ne.matches(&db));
        assert!(ne.matches(&none), "!= matches objects without the key");
    }

    #[test]
    fn empty_value() {
        let s = sel("app=");
        assert!(s.matches(&labels(&[("app", "")])));
        assert!(!s.matches(&labels(&[("app", "x")])));
        assert!(!s.matches(&labels(&[])));
        assert_eq!(s.to_string(), "app=");
        assert!(sel("a=,b").matches(&labels(&[("a", ""), ("b", "1")])));
    }

    #[test]
    fn set_operators() {
        let s = sel("env in (prod, staging)");
        assert!(s.matches(&labels(&[("env", "prod")])));
        assert!(s.matches(&labels(&[("env", "staging")])));
        assert!(!s.matches(&labels(&[("env", "dev")])));
        assert!(!s.matches(&labels(&[])));
        let n = sel("env notin (prod,staging)");
        assert!(!n.matches(&labels(&[("env", "prod")])));
        assert!(n.matches(&labels(&[("env", "dev")])));
        assert!(
            n.matches(&labels(&[])),
            "notin matches objects without the key"
        );
        // Empty entries are the empty value.
        let e = sel("env in (a,)");
        assert_eq!(e.requirements()[0].values(), ["", "a"]);
        assert!(e.matches(&labels(&[("env", "")])));
    }

    #[test]
    fn existence_operators() {
        let has = sel("app");
        assert!(has.matches(&labels(&[("app", "")])));
        assert!(!has.matches(&labels(&[("other", "x")])));
        let hasnt = sel("!app");
        assert!(hasnt.matches(&labels(&[("other", "x")])));
        assert!(!hasnt.matches(&labels(&[("app", "x")])));
        let both = sel("app, !canary, tier in (front)");
        assert!(both.matches(&labels(&[("app", "x"), ("tier", "front")])));
        assert!(!both.matches(&labels(&[("app", "x"), ("tier", "front"), ("canary", "")])));
    }

    #[test]
    fn numeric_operators() {
        let gt = sel("rank>3");
        assert!(gt.matches(&labels(&[("rank", "4")])));
        assert!(!gt.matches(&labels(&[("rank", "3")])));
        assert!(!gt.matches(&labels(&[("rank", "x")])));
        assert!(!gt.matches(&labels(&[])));
        assert!(sel("rank<3").matches(&labels(&[("rank", "-1")])));
        assert!(matches!(
            LabelSelector::parse("rank>x"),
            Err(SelectorError::NotAnInteger { .. })
        ));
    }

    #[test]
    fn prefixed_keys() {
        let s = sel("app.kubernetes.io/name=web,example.com/x-y_z.w notin (a)");
        assert!(s.matches(&labels(&[("app.kubernetes.io/name", "web")])));
        assert_eq!(s.requirements().len(), 2);
    }

    #[test]
    fn bad_syntax() {
        let cases = [
            ("env in (a,b", "unbalanced"),
            ("env in (a", "unbalanced"),
            ("env in a", "no parens"),
            ("env in", "no parens"),
            ("env notin ()", "empty set"),
            ("env in ()", "empty set"),
            ("=x", "empty key"),
            ("!=x", "empty key"),
            (",", "lone comma"),
            ("a=b,", "trailing comma"),
            ("a=b,,c", "double comma"),
            ("a b", "two words"),
            ("a=b c", "value then word"),
            ("a=(b)", "paren as value"),
            ("a in (b c)", "missing comma"),
            ("a)", "stray paren"),
            ("!", "bang alone"),
            ("!a=b", "bang with value"),
            ("a=b=c", "double op"),
            ("-a=b", "key starts with dash"),
            ("a-=b", "key ends with dash"),
            ("a/b/c=d", "two slashes"),
            ("/a=b", "empty prefix"),
            ("a/=b", "empty name"),
            ("Upper.Case/a=b", "uppercase prefix"),
            ("a=b$", "bad value char"),
            ("a=-b", "value starts with dash"),
            ("ключ=v", "non-ascii key"),
            ("a in (x,ü)", "non-ascii value"),
        ];
        for (input, why) in cases {
            let err = LabelSelector::parse(input);
            assert!(err.is_err(), "{input:?} ({why}) should fail, got {err:?}");
        }
        assert!(matches!(
            LabelSelector::parse("env in (a,b"),
            Err(SelectorError::UnbalancedParens { position: 7, .. })
        ));
        assert!(matches!(
            LabelSelector::parse("=x"),
            Err(SelectorError::EmptyKey { position: 0, .. })
        ));
        let long = format!("a={}", "x".repeat(64));
        assert!(matches!(
            LabelSelector::parse(&long),
            Err(SelectorError::InvalidValue { .. })
        ));
        let long_key = format!("{}=x", "k".repeat(64));
        assert!(matches!(
            LabelSelector::parse(&long_key),
            Err(SelectorError::InvalidKey { .. })
        ));
        // 63 is fine.
        sel(&format!("{}={}", "k".repeat(63), "v".repeat(63)));
    }

    #[test]
    fn error_messages_explain() {
        let msg = LabelSelector::parse("env in (a").unwrap_err().to_string();
        assert!(msg.contains("not closed"), "{msg}");
        let msg = LabelSelector::parse("a=b$").unwrap_err().to_string();
        assert!(msg.contains("'$'"), "{msg}");
        let msg = LabelSelector::parse("a b").unwrap_err().to_string();
        assert!(msg.contains("position 2"), "{msg}");
    }

    #[test]
    fn display_round_trip() {
        let inputs = [
            "app=web",
            "app==web",
            "b!=x, a",
            "!a",
            "env in (z, a, a)",
            "env notin (x)",
            "x in (,a)",
            "x in (,)",
            "x notin (,)",
            "app.kubernetes.io/name=web,tier,!canary,rank>2,rank<10",
            "a=",
        ];
        for input in inputs {
            let first = sel(input);
            let text = first.to_string();
            let second = sel(&text);
            assert_eq!(text, second.to_string(), "round trip of {input:?}");
            // Same meaning on a few label sets.
            for set in [
                labels(&[]),
                labels(&[("app", "web"), ("a", ""), ("x", "")]),
                labels(&[("env", "a"), ("b", "x"), ("rank", "5"), ("tier", "1")]),
            ] {
                assert_eq!(first.matches(&set), second.matches(&set), "{input:?}");
            }
        }
        assert_eq!(sel("b=1,a in (z,y)").to_string(), "a in (y,z),b=1");
        assert_eq!(sel("app==web").to_string(), "app=web");
    }

    #[test]
    fn match_expressions() {
        let s = LabelSelector::from_json(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "staging"]},
                {"key": "track", "operator": "NotIn", "values": ["canary"]},
                {"key": "tier", "operator": "Exists"},
                {"key": "legacy", "operator": "DoesNotExist", "values": []}
            ]
        }))
        .unwrap();
        let ok = labels(&[("app", "web"), ("env", "prod"), ("tier", "")]);
        assert!(s.matches(&ok));
        let mut canary = ok.clone();
        canary.insert("track".into(), "canary".into());
        assert!(!s.matches(&canary));
        let mut stable = ok.clone();
        stable.insert("track".into(), "stable".into());
        assert!(s.matches(&stable));
        let mut legacy = ok.clone();
        legacy.insert("legacy".into(), "1".into());
        assert!(!s.matches(&legacy));
        let mut no_tier = ok.clone();
        no_tier.remove("tier");
        assert!(!s.matches(&no_tier));
        assert_eq!(
            s.to_string(),
            "app=web,env in (prod,staging),!legacy,tier,track notin (canary)"
        );
        assert_eq!(sel(&s.to_string()), s);
    }

    #[test]
    fn match_expressions_errors() {
        let bad = [
            json!({"matchExpressions": [{"key": "a", "operator": "In"}]}),
            json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}),
            json!({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": null}]}),
            json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
            json!({"matchExpressions": [{"key": "a", "operator": "DoesNotExist", "values": ["x"]}]}),
            json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}),
            json!({"matchExpressions": [{"key": "a", "operator": "in", "values": ["1"]}]}),
            json!({"matchExpressions": [{"operator": "Exists"}]}),
            json!({"matchExpressions": [{"key": "a"}]}),
            json!({"matchExpressions": [{"key": 1, "operator": "Exists"}]}),
            json!({"matchExpressions": [{"key": "a", "operator": "In", "values": [1]}]}),
            json!({"matchExpressions": [{"key": "a", "operator": "In", "values": "x"}]}),
            json!({"matchExpressions": ["a"]}),
            json!({"matchExpressions": {}}),
            json!({"matchLabels": {"a": 1}}),
            json!({"matchLabels": ["a"]}),
            json!({"matchLabels": {"a b": "c"}}),
            json!({"matchLabels": {"a": "c d"}}),
            json!("app=web"),
            json!([]),
        ];
        for value in bad {
            assert!(
                LabelSelector::from_json(&value).is_err(),
                "{value} should be rejected"
            );
        }
        let msg = LabelSelector::from_json(&json!({"matchExpressions": [
            {"key": "a", "operator": "In", "values": []}
        ]}))
        .unwrap_err()
        .to_string();
        assert!(
            msg.contains("In") && msg.contains("at least one value"),
            "{msg}"
        );
    }

    #[test]
    fn null_and_empty_objects_select_everything() {
        for v in [
            json!(null),
            json!({}),
            json!({"matchLabels": null, "matchExpressions": null}),
            json!({"matchLabels": {}, "matchExpressions": []}),
        ] {
            let s = LabelSelector::from_json(&v).unwrap();
            assert!(s.is_empty());
            assert!(s.matches_object(&json!({})));
        }
    }

    #[test]
    fn objects_and_labels_of() {
        let pod = json!({"metadata": {"name": "p", "labels": {"app": "web", "n": 3}}});
        assert_eq!(labels_of(&pod), labels(&[("app", "web")]));
        assert!(sel("app=web").matches_object(&pod));
        assert!(!sel("app=db").matches_object(&pod));
        assert!(sel("!app").matches_object(&json!({"metadata": {}})));
        assert!(sel("app!=x").matches_object(&json!(null)));
        assert!(!sel("app").matches_object(&json!("not an object")));
        let from_map = LabelSelector::from_map(&labels(&[("app", "web")])).unwrap();
        assert!(from_map.matches_object(&pod));
        assert!(LabelSelector::from_map(&labels(&[("bad key", "x")])).is_err());
    }

    #[test]
    fn field_selector_operators() {
        let pod = json!({
            "metadata": {"name": "web-1", "namespace": "default"},
            "spec": {"nodeName": "node-a", "hostNetwork": true, "priority": 7},
            "status": {"phase": "Running"}
        });
        let m = |s: &str| FieldSelector::parse(s).unwrap().matches(&pod);
        assert!(m(""));
        assert!(m("metadata.name=web-1"));
        assert!(m("metadata.name==web-1"));
        assert!(!m("metadata.name!=web-1"));
        assert!(m("metadata.namespace=default,status.phase!=Pending"));
        assert!(!m("metadata.namespace=default,status.phase=Pending"));
        assert!(m("spec.nodeName=node-a"));
        assert!(m("spec.hostNetwork=true"));
        assert!(m("spec.priority=7"));
        // Missing fields compare as the empty string.
        assert!(m("spec.serviceAccountName="));
        assert!(m("spec.serviceAccountName!=x"));
        assert!(!m("spec.serviceAccountName=x"));
        assert!(m("status.phase.deeper="));
        assert!(m(" status.phase = Running , "));
    }

    #[test]
    fn field_selector_escapes_and_display() {
        let s = FieldSelector::parse(r"metadata.name=a\,b\=c\\d,spec.type!=x").unwrap();
        assert_eq!(s.requirements()[0].value(), r"a,b=c\d");
        assert!(s.requirements()[1].is_negated());
        let text = s.to_string();
        assert_eq!(text, r"metadata.name=a\,b\=c\\d,spec.type!=x");
        assert_eq!(FieldSelector::parse(&text).unwrap(), s);
        assert_eq!(
            s.fields().collect::<Vec<_>>(),
            ["metadata.name", "spec.type"]
        );
        let v = FieldSelector::parse("a==b=c").unwrap();
        assert_eq!(v.requirements()[0].value(), "b=c");
    }

    #[test]
    fn field_selector_exact_match() {
        let em = |s: &str| {
            FieldSelector::parse(s)
                .unwrap()
                .exact_match("metadata.name")
                .map(str::to_string)
        };
        assert_eq!(em("metadata.name=web").as_deref(), Some("web"));
        assert_eq!(em("metadata.name==web").as_deref(), Some("web"));
        assert_eq!(
            em("spec.type!=x,metadata.name=web,metadata.name=db").as_deref(),
            Some("web")
        );
        assert_eq!(em("metadata.name!=web"), None);
        assert_eq!(em("metadata.namespace=web"), None);
        assert_eq!(em(""), None);
    }

    #[test]
    fn field_selector_errors() {
        for bad in [
            "metadata.name",
            "=x",
            "!=x",
            r"a=b\x",
            r"a=b\",
            r"a\.b=c",
            "a=b,c",
        ] {
            assert!(
                FieldSelector::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
        let msg = FieldSelector::parse("metadata.name")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("no '='"), "{msg}");
    }

    #[test]
    fn single_name() {
        let one = |s: &str| {
            FieldSelector::parse(s)
                .unwrap()
                .single_name()
                .map(str::to_owned)
        };
        assert_eq!(one("metadata.name=web"), Some("web".into()));
        assert_eq!(one("metadata.name==web"), Some("web".into()));
        assert_eq!(one("metadata.name!=web"), None);
        assert_eq!(one("metadata.name=web,metadata.namespace=x"), None);
        assert_eq!(one("metadata.namespace=x"), None);
        assert_eq!(one(""), None);
    }

    #[test]
    fn never_panics_on_odd_input() {
        let weird = [
            "(((",
            ")))",
            "!!!",
            "a in ((a))",
            "in",
            "notin",
            "in in (in)",
            "a notin (notin)",
            "é=ü",
            "a=\u{0}",
            "\u{feff}",
            "a,,,,",
            "a in (,,,)",
            "<",
            ">",
            "a<",
            "a>",
            "a<<1",
            "!in",
            "=",
            "==",
            "!=",
            "a!",
            "a!b",
            "😀",
            "a=😀",
            "a in (😀",
        ];
        for w in weird {
            let _ = LabelSelector::parse(w);
            let _ = FieldSelector::parse(w);
        }
        // Keywords are usable as values.
        assert!(sel("a=in").matches(&labels(&[("a", "in")])));
        assert!(sel("a notin (notin)").matches(&labels(&[("a", "x")])));
    }
}
