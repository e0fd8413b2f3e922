//! Label selectors: parsed, built from JSON, matched against labels.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use super::error::SelectorError;
use super::parser::{Parser, lex};
use super::requirement::{Operator, Requirement};

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
