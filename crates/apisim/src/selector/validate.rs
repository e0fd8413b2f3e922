//! Label key and value syntax.

use super::error::SelectorError;

/// Longest label name (the part after the optional `prefix/`) and label value.
const MAX_NAME_LEN: usize = 63;
/// Longest DNS subdomain allowed as a label key prefix.
const MAX_PREFIX_LEN: usize = 253;
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

pub(super) fn validate_label_key(key: &str) -> Result<(), SelectorError> {
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

pub(super) fn validate_label_value(key: &str, value: &str) -> Result<(), SelectorError> {
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
