//! Reading `/proc/<pid>/stat` lines (pure, no file access).

/// From a `/proc/<pid>/stat` line: whether a terminal is attached (`tty_nr` ≠ 0) and its
/// foreground process group (`tpgid`) is the process's own group (`pgrp`). Then the
/// terminal delivers Ctrl-C to the whole group itself, and a process that forwards
/// signals to its children must not forward them again. `None` for a line that does not
/// parse.
pub fn foreground_from_stat(stat: &str) -> Option<bool> {
    // The command name (field 2) may contain spaces and parentheses: the fields after it
    // start behind the last `)`. Then: state, ppid, pgrp, session, tty_nr, tpgid.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().take(6).collect();
    let pgrp: i64 = f.get(2)?.parse().ok()?;
    let tty: i64 = f.get(4)?.parse().ok()?;
    let tpgid: i64 = f.get(5)?.parse().ok()?;
    Some(tty != 0 && tpgid == pgrp)
}

#[cfg(test)]
mod tests {
    use super::foreground_from_stat;

    #[test]
    fn foreground_needs_a_terminal_whose_group_is_ours() {
        // pid (comm) state ppid pgrp session tty_nr tpgid ...
        let fg = "4242 (kubelan) S 100 4242 100 34816 4242 4194560 0 0";
        assert_eq!(foreground_from_stat(fg), Some(true));
        let bg = "4242 (kubelan) S 100 4242 100 34816 4300 4194560 0 0";
        assert_eq!(foreground_from_stat(bg), Some(false));
        let no_tty = "4242 (kubelan) S 100 4242 4242 0 -1 4194560 0 0";
        assert_eq!(foreground_from_stat(no_tty), Some(false));
        // A command name with spaces and a parenthesis does not shift the fields.
        let odd = "4242 (a) b (c) S 100 4242 100 34816 4242 0";
        assert_eq!(foreground_from_stat(odd), Some(true));
        assert_eq!(foreground_from_stat("garbage"), None);
        assert_eq!(foreground_from_stat("1 (x) S 1 -"), None);
    }
}
