//! `NO_COLOR` and non-terminal output (issue 21): every command that writes terminal escapes
//! (colour, a spinner, a line or a table redrawn in place) writes them on a terminal only,
//! and writes none when `NO_COLOR` is set — clap's help and errors, `lab up`'s progress,
//! `install`'s spinner, `-v` log lines, `forward`'s table, the gateway's live summary. Each
//! command runs under a pseudo-terminal (python3's `pty`, with output post-processing off so
//! that the terminal adds no carriage return of its own), with and without `NO_COLOR=1`, and
//! through a pipe. The help cases need nothing; the others need root and a lab (CI runs
//! them with `KUBELAN_E2E_REQUIRED=1`).

use std::process::Command;

use kubelan_testkit::{Lab, kubelan, kubelan_bin, lab_available, root_or_skip, unique_name};

/// Runs `argv` on a new pseudo-terminal (80x24) and returns everything written to it.
/// After `secs` it types Ctrl-C (and kills the process group if that is not enough), so
/// that long-running commands end by themselves.
const PTY_RUN: &str = r#"
import fcntl, os, pty, select, signal, struct, sys, termios, time
secs = float(sys.argv[1]); argv = sys.argv[2:]
pid, fd = pty.fork()
if pid == 0:
    attrs = termios.tcgetattr(1)
    attrs[1] &= ~termios.OPOST
    termios.tcsetattr(1, termios.TCSANOW, attrs)
    fcntl.ioctl(1, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    os.execvp(argv[0], argv)
out = b""
start = time.monotonic()
stage = 0
while True:
    t = time.monotonic() - start
    if stage == 0 and t > secs:
        os.write(fd, b"\x03"); stage = 1
    elif stage == 1 and t > secs + 10:
        os.killpg(pid, signal.SIGTERM); stage = 2
    elif stage == 2 and t > secs + 20:
        os.killpg(pid, signal.SIGKILL); stage = 3
    if select.select([fd], [], [], 0.1)[0]:
        try:
            b = os.read(fd, 65536)
        except OSError:
            break
        if not b:
            break
        out += b
os.waitpid(pid, 0)
sys.stdout.buffer.write(out)
"#;

/// How a command's output reaches the reader.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Via {
    /// A terminal, `TERM=xterm`, no `NO_COLOR`.
    Tty,
    /// A terminal with `NO_COLOR=1`.
    TtyNoColor,
    /// Pipes (stdout and stderr), no `NO_COLOR`.
    Pipe,
}

/// What `argv` (the first word `kubelan` is the binary under test) wrote, stdout and
/// stderr together.
fn output(via: Via, secs: u32, argv: &[&str]) -> String {
    let bin = kubelan_bin();
    let mut argv: Vec<&str> = argv.to_vec();
    let bin = bin.to_str().unwrap();
    if argv[0] == "kubelan" {
        argv[0] = bin;
    }
    let mut cmd = match via {
        Via::Pipe => {
            // A pipe never gets a Ctrl-C: bound long-running commands with timeout(1).
            let mut c = Command::new("timeout");
            c.args(["-s", "INT", "-k", "10", &secs.to_string()]);
            c
        }
        Via::Tty | Via::TtyNoColor => {
            let mut c = Command::new("python3");
            c.args(["-c", PTY_RUN, &secs.to_string()]);
            c
        }
    };
    cmd.args(&argv).env("TERM", "xterm").env_remove("NO_COLOR");
    if via == Via::TtyNoColor {
        cmd.env("NO_COLOR", "1");
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {argv:?}: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// `argv` writes escapes on a terminal (`rich`: it is expected to), and neither escapes nor
/// a carriage return (a line redrawn in place) with `NO_COLOR` or into a pipe; `needle`
/// shows each run did its work.
fn check(argv: &[&str], secs: u32, rich: bool, needle: &str) {
    for via in [Via::Tty, Via::TtyNoColor, Via::Pipe] {
        let out = output(via, secs, argv);
        assert!(
            out.contains(needle),
            "{argv:?} {via:?}: no {needle:?} in\n{out}"
        );
        let escapes = out.contains('\x1b');
        match via {
            Via::Tty => assert_eq!(
                escapes, rich,
                "{argv:?} on a terminal: escapes {escapes}, expected {rich}:\n{out:?}"
            ),
            Via::TtyNoColor | Via::Pipe => assert!(
                !escapes && !out.contains('\r'),
                "{argv:?} {via:?} wrote escapes or a carriage return:\n{out:?}"
            ),
        }
    }
}

#[test]
fn help_and_usage_errors_are_coloured_only_on_a_terminal_without_no_color() {
    // Not a lab test, but it needs python3 (scripts/deps.sh installs it).
    if !root_or_skip("pseudo-terminal tests", &["python3", "timeout"], &[]) {
        return;
    }
    check(&["kubelan", "--help"], 30, true, "Usage:");
    check(&["kubelan", "connect", "--help"], 30, true, "Usage:");
    check(
        &["kubelan", "lab", "--bogus"],
        30,
        true,
        "unexpected argument",
    );
}

#[test]
fn lab_install_logs_forward_and_gateway_follow_no_color() {
    if !lab_available() || !root_or_skip("pseudo-terminal tests", &["python3"], &[]) {
        return;
    }
    // The guard first, so that the lab goes whatever happens; `lab up` itself runs on a
    // terminal, once with NO_COLOR (it cannot run twice), which must leave no line redrawn
    // in place.
    let lab = Lab {
        name: unique_name("nc"),
        up_seconds: 0.0,
    };
    let up = output(
        Via::TtyNoColor,
        120,
        &["kubelan", "lab", "up", "--name", &lab.name],
    );
    assert!(up.contains("lab "), "{up}");
    assert!(
        !up.contains('\x1b') && !up.contains('\r'),
        "lab up with NO_COLOR on a terminal:\n{up:?}"
    );
    let status = kubelan()
        .args(["lab", "status", "--name", &lab.name])
        .output()
        .unwrap();
    assert!(status.status.success(), "the lab is not running:\n{up}");

    let exec = |host: &'static str, cmd: &'static [&'static str]| -> Vec<String> {
        let mut v: Vec<String> = ["kubelan", "lab", "exec", "--name", &lab.name, host, "--"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(cmd.iter().map(|s| s.to_string()));
        v
    };
    let run = |argv: &[String], secs: u32, needle: &str| {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        check(&argv, secs, true, needle);
    };
    // The spinner (idempotent: each run waits for the agent again).
    run(&exec("node1", &["kubelan", "install"]), 60, "agent");
    // `-vv` log lines (tracing's coloured levels).
    run(
        &exec(
            "laptop",
            &["kubelan", "-vv", "proxy", "--listen", "127.0.0.1:1080"],
        ),
        4,
        "DEBUG",
    );
    // The table redrawn in place.
    run(
        &exec(
            "laptop",
            &["kubelan", "forward", "svc/web", "18080:80", "-n", "default"],
        ),
        4,
        "web",
    );
    // The live summary, refreshed in place every 2 s.
    run(
        &exec(
            "node1",
            &[
                "kubelan",
                "gateway",
                "--mode",
                "node",
                "--lan",
                "172.16.0.0/18",
            ],
        ),
        6,
        "gateway ready",
    );
    lab.down();
}
