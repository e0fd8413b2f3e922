//! Whether kubelan may write terminal escapes — colour, bold, a spinner, a line or a table
//! redrawn in place — on a stream, or only plain lines.
//!
//! One decision for every place that writes escapes (the CLI's help and errors, log lines,
//! `lab up`'s and `install`'s progress, the live tables of `forward`/`expose`/`replace`,
//! the gateway's live summary), so they all agree: escapes only on a terminal, and never
//! when `NO_COLOR` is set and non-empty (<https://no-color.org>) or `TERM=dumb`. With
//! `NO_COLOR` kubelan writes no escape byte at all, not only no colour: a spinner or a
//! redrawn table is of no use to someone who asked for plain output (screen readers, logs
//! of a terminal session).
//!
//! [`decide`] is the decision (pure); [`stdout`] and [`stderr`] apply it to this process.
//! [`json`] is the other half of how kubelan writes: the versioned envelope of its JSON
//! documents.

pub mod json;

use std::ffi::OsStr;
use std::io::IsTerminal;

/// How a stream is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// A terminal that wants them: colour, spinners, lines and tables redrawn in place.
    Rich,
    /// Plain lines: no escape sequence, no carriage return to redraw a line.
    Plain,
}

impl Style {
    /// Whether escapes may be written.
    #[must_use]
    pub fn is_rich(self) -> bool {
        self == Style::Rich
    }
}

/// The style of a stream: whether it `is_terminal`, and the values of `NO_COLOR` and
/// `TERM` (`None` when unset).
#[must_use]
pub fn decide(is_terminal: bool, no_color: Option<&OsStr>, term: Option<&OsStr>) -> Style {
    // no-color.org: set *and non-empty* disables colour; an empty value does not.
    let no_color = no_color.is_some_and(|v| !v.is_empty());
    let dumb = term.is_some_and(|t| t == "dumb");
    if is_terminal && !no_color && !dumb {
        Style::Rich
    } else {
        Style::Plain
    }
}

fn of(is_terminal: bool) -> Style {
    decide(
        is_terminal,
        std::env::var_os("NO_COLOR").as_deref(),
        std::env::var_os("TERM").as_deref(),
    )
}

/// The style of this process's standard output.
#[must_use]
pub fn stdout() -> Style {
    of(std::io::stdout().is_terminal())
}

/// The style of this process's standard error.
#[must_use]
pub fn stderr() -> Style {
    of(std::io::stderr().is_terminal())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(tty: bool, no_color: Option<&str>, term: Option<&str>) -> Style {
        decide(tty, no_color.map(OsStr::new), term.map(OsStr::new))
    }

    #[test]
    fn a_terminal_is_rich_unless_no_color_or_a_dumb_terminal() {
        assert_eq!(d(true, None, None), Style::Rich);
        assert_eq!(d(true, None, Some("xterm-256color")), Style::Rich);
        for v in ["1", "0", "false", "yes", " "] {
            // Any non-empty value, even "0": the convention is "set", not "true".
            assert_eq!(
                d(true, Some(v), Some("xterm")),
                Style::Plain,
                "NO_COLOR={v:?}"
            );
        }
        assert_eq!(d(true, None, Some("dumb")), Style::Plain);
    }

    #[test]
    fn an_empty_no_color_is_unset() {
        assert_eq!(d(true, Some(""), Some("xterm")), Style::Rich);
    }

    #[test]
    fn pipes_and_files_are_always_plain() {
        for (no_color, term) in [
            (None, None),
            (None, Some("xterm")),
            (Some(""), Some("xterm")),
            (Some("1"), Some("dumb")),
        ] {
            assert_eq!(
                d(false, no_color, term),
                Style::Plain,
                "{no_color:?} {term:?}"
            );
        }
    }
}
