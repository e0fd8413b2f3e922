//! What loading or checking a lab configuration reports.

use std::fmt;
use std::path::{Path, PathBuf};

use super::MAX_LAB_NAME_LEN;

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// One problem [`LabConfig::validate`](super::LabConfig::validate) found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// The offending field, as a path into the TOML file (`network.node_cidr`,
    /// `nodes[1].address`, …; list indexes count from 0).
    pub field: String,
    /// What is wrong.
    pub problem: String,
    /// How to fix it.
    pub fix: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (fix: {})", self.field, self.problem, self.fix)
    }
}

/// Errors loading or checking a lab configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read lab config {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why reading failed.
        error: std::io::Error,
    },
    /// The text is not valid TOML, has unknown keys or values of the wrong
    /// kind. The message includes the line and column.
    #[error("{}", parse_message(path.as_deref(), error))]
    Parse {
        /// The file, when the text came from one.
        path: Option<PathBuf>,
        /// The TOML parser's error.
        error: Box<toml::de::Error>,
    },
    /// The configuration parsed but describes an impossible lab; every
    /// problem found is listed.
    #[error("{}", issues_message(.0))]
    Invalid(Vec<ConfigIssue>),
    /// A lab name (`--name`) is not acceptable.
    #[error(
        "invalid lab name {name:?}: {problem} (fix: use 1 to {MAX_LAB_NAME_LEN} characters: lowercase \
         letters, digits and '-', starting with a letter)"
    )]
    InvalidLabName {
        /// The rejected name.
        name: String,
        /// What is wrong with it.
        problem: String,
    },
}

impl ConfigError {
    /// The validation problems, when this is [`ConfigError::Invalid`] (empty
    /// otherwise).
    pub fn issues(&self) -> &[ConfigIssue] {
        match self {
            ConfigError::Invalid(issues) => issues,
            _ => &[],
        }
    }
}

fn parse_message(path: Option<&Path>, error: &toml::de::Error) -> String {
    let error = error.to_string();
    let error = error.trim_end();
    match path {
        Some(path) => format!("invalid lab config {}:\n{error}", path.display()),
        None => format!("invalid lab config:\n{error}"),
    }
}

fn issues_message(issues: &[ConfigIssue]) -> String {
    let mut text = match issues.len() {
        1 => "invalid lab config: 1 problem:".to_owned(),
        n => format!("invalid lab config: {n} problems:"),
    };
    for issue in issues {
        text.push_str("\n  ");
        text.push_str(&issue.to_string());
    }
    text
}
