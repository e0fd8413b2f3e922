//! Field selectors.

use std::fmt;

use serde_json::Value;

use super::error::SelectorError;

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
