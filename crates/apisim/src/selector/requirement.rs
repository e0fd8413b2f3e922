//! One requirement of a label selector.

use std::collections::BTreeMap;
use std::fmt;

use super::error::SelectorError;
use super::validate::{validate_label_key, validate_label_value};

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
    pub(super) key: String,
    pub(super) operator: Operator,
    /// Sorted and without duplicates.
    pub(super) values: Vec<String>,
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
