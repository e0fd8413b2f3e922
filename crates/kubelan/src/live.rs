//! What a long-running command shows (`forward`, `expose`, `replace`): on a terminal a
//! table redrawn in place below the event lines, plain lines when stdout is not a
//! terminal or `NO_COLOR` is set (`kubelan_term`), or one JSON object per line.

use std::io::Write;

/// How events and the table reach stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Lines above a table redrawn in place (a terminal).
    Table,
    /// Plain lines, no table.
    Lines,
    /// One JSON object per line.
    Json,
}

/// The screen below the command: what was drawn last, so it can be redrawn in place.
pub(crate) struct Screen {
    pub(crate) mode: Mode,
    drawn: usize,
}

impl Screen {
    /// JSON when asked, else a table on a terminal and lines otherwise.
    pub(crate) fn new(json: bool) -> Screen {
        let mode = if json {
            Mode::Json
        } else if kubelan_term::stdout().is_rich() {
            Mode::Table
        } else {
            Mode::Lines
        };
        Screen { mode, drawn: 0 }
    }

    /// The terminal's width for the table (at least 40 columns).
    pub(crate) fn width() -> usize {
        usize::from(console::Term::stdout().size().1).max(40)
    }

    fn clear(&mut self, out: &mut impl Write) {
        if self.drawn > 0 {
            let _ = write!(out, "\x1b[{}F\x1b[J", self.drawn);
            self.drawn = 0;
        }
    }

    /// Replaces the table with `text` (only in [`Mode::Table`]).
    pub(crate) fn draw(&mut self, text: &str) {
        if self.mode != Mode::Table {
            return;
        }
        let mut out = std::io::stdout().lock();
        self.clear(&mut out);
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
        self.drawn = text.lines().count();
    }

    /// Prints `text` (whole lines): above the table, which the caller then redraws, or as
    /// is in [`Mode::Lines`]; nothing in [`Mode::Json`].
    pub(crate) fn print(&mut self, text: &str) {
        let mut out = std::io::stdout().lock();
        match self.mode {
            Mode::Json => return,
            Mode::Table => self.clear(&mut out),
            Mode::Lines => {}
        }
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }

    /// Shows an event: its JSON object, its line, or on a terminal its line above the
    /// table, which `table` then redraws (`in_table`: the table shows it, no line).
    pub(crate) fn event(
        &mut self,
        json: impl FnOnce() -> serde_json::Value,
        line: impl FnOnce() -> String,
        in_table: bool,
        table: impl FnOnce() -> String,
    ) {
        match self.mode {
            Mode::Json => self.json(&json()),
            Mode::Lines => self.print(&format!("{}\n", line())),
            Mode::Table if in_table => {}
            Mode::Table => {
                self.print(&format!("{}\n", line()));
                self.draw(&table());
            }
        }
    }

    /// One JSON line.
    pub(crate) fn json(&self, v: &serde_json::Value) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{v}");
        let _ = out.flush();
    }
}
