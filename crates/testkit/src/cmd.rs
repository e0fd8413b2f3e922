//! Running commands and waiting for conditions, with failures that show what happened.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs a command and returns its output; fails the test when it cannot be started.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command that must succeed; returns its stdout. On failure the test fails with
/// the exit status, stdout and stderr.
pub fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sends signal `sig` (a name such as `TERM` or `STOP`) to process `pid` with `kill`;
/// whether that succeeded.
pub fn signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

/// The machine's `kubectl --kubeconfig KUBECONFIG ARGS…`, given `stdin` (or nothing):
/// whether it succeeded, and its stdout and stderr.
pub fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    let mut input = child.stdin.take().expect("piped stdin");
    input
        .write_all(stdin.unwrap_or("").as_bytes())
        .expect("write kubectl's stdin");
    drop(input);
    let out = child.wait_with_output().expect("kubectl's output");
    (out.status.success(), text(&out))
}

/// stdout and stderr of a finished command, one after the other.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Polls `f` every 100 ms until it returns `Some`, for at most `secs` seconds; then fails
/// the test naming `what` it waited for.
pub fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_returns_stdout_and_fails_with_stderr() {
        assert_eq!(ok(Command::new("sh").args(["-c", "echo out"])), "out\n");
        let r =
            std::panic::catch_unwind(
                || ok(Command::new("sh").args(["-c", "echo bad >&2; exit 3"])),
            );
        let msg = *r
            .expect_err("a failing command fails")
            .downcast::<String>()
            .unwrap();
        assert!(msg.contains("stderr: bad"), "{msg}");
    }

    #[test]
    fn signal_says_whether_kill_worked() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        assert!(signal(child.id(), "TERM"));
        child.wait().unwrap();
        assert!(!signal(u32::MAX / 2, "TERM"), "no such process");
    }

    #[test]
    fn text_joins_both_streams() {
        let out = run(Command::new("sh").args(["-c", "echo a; echo b >&2"]));
        assert_eq!(text(&out), "a\nb\n");
    }

    #[test]
    fn wait_for_returns_the_first_answer_and_times_out() {
        let mut n = 0;
        assert_eq!(
            wait_for("n to reach 3", 5, || {
                n += 1;
                (n >= 3).then_some(n)
            }),
            3
        );
        let r = std::panic::catch_unwind(|| wait_for::<()>("nothing", 0, || None));
        assert!(r.is_err());
    }
}
