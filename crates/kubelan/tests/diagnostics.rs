//! End-to-end tests of issue 17's diagnostics on the lab:
//! - bad kubeconfigs (closed port, wrong token, missing context, unreachable address, an
//!   unparsable file) ×
//!   every mode that talks to the API: one clear line each, no debug dump, no line twice,
//!   a non-zero exit code, and the host left as it was;
//! - the ICMP-redirect pitfall of a tunnel gateway on the LAN it serves: the gateway warns,
//!   and after the office router moves to another gateway, `doctor --via` on a PC names the
//!   redirect the PC still follows;
//! - `kubelan lab exec` passes SIGTERM, SIGINT and SIGHUP to its command and exits with the
//!   command's status.
//!
//! Needs root; CI runs them with `KUBELAN_E2E_REQUIRED=1`.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use kubelan_testkit::{
    Background, Cluster, Lab, TempDir, host_snapshot, http_code, kubelan, lab_available,
    root_snapshot, signal, text, wait_for,
};

const NODE1: &str = "10.4.7.11";
const PC2: &str = "172.16.1.12";
const LAN: &str = "172.16.0.0/18";

/// The lab-view kubeconfig with one thing broken.
fn broken_kubeconfig(good: &str, what: &str) -> String {
    match what {
        // Nothing listens on node1:6444: the connection is refused at once.
        "closed port" => good.replace("10.4.7.11:6443", "10.4.7.11:6444"),
        // The first user is the lab admin, whom the current context uses.
        "wrong token" => {
            let at = good.find("token: ").expect("a token in the kubeconfig") + 7;
            let end = at + good[at..].find('\n').unwrap();
            format!(
                "{}kubelan-lab.not-a-valid-token{}",
                &good[..at],
                &good[end..]
            )
        }
        "missing context" => good.replace("current-context: kubelan-lab", "current-context: gone"),
        "unparsable file" => good.replace(
            "current-context: kubelan-lab",
            "current-context: [kubelan-lab",
        ),
        // An unused address of the lab's node network: the edge router finds no neighbour
        // there and answers "no route to host" after its ARP attempts (about 3 s). The
        // packets never leave the lab.
        "unreachable address" => good.replace("10.4.7.11:6443", "10.4.7.99:6443"),
        other => panic!("unknown breakage {other}"),
    }
}

/// What the one line about `what` must say (in the first part, which `doctor` prints on
/// the check's line; the fix follows).
fn expected(what: &str) -> &'static str {
    match what {
        "closed port" => {
            "cannot reach the Kubernetes API at https://10.4.7.11:6444/ (context \"kubelan-lab\"): connection refused"
        }
        "wrong token" => {
            "the Kubernetes API at https://10.4.7.11:6443/ rejected the credentials of user \"admin\" (context \"kubelan-lab\")"
        }
        "missing context" => "context \"gone\" is not in the kubeconfig (it has: kubelan-lab, ",
        "unparsable file" => "unparsable-file.yaml: failed to parse kubeconfig YAML: ",
        "unreachable address" => {
            "cannot reach the Kubernetes API at https://10.4.7.99:6443/ (context \"kubelan-lab\"): no route to host"
        }
        other => panic!("unknown breakage {other}"),
    }
}

/// The fix the message names (for `doctor`, on the line after the check).
fn fix(what: &str) -> &'static str {
    match what {
        "closed port" | "unreachable address" => "check that this machine reaches that address",
        "wrong token" => "log in again, or refresh that user's token or certificate",
        "missing context" => "pass --context with one of those",
        "unparsable file" => "fix the file or pass another one with --kubeconfig",
        other => panic!("unknown breakage {other}"),
    }
}

/// The argument vector of `mode` with kubeconfig `kc`; `i` keeps ports apart when rows run
/// at once.
fn mode_argv(mode: &str, kc: &str, i: usize) -> Vec<String> {
    let port = 18000 + i;
    let rest: Vec<String> = match mode {
        "proxy" => vec![
            "proxy".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
        ],
        "connect" => vec!["connect".into(), "--tun".into(), format!("kl-e{i}")],
        "forward" => vec!["forward".into(), "svc/web".into(), format!("{port}:80")],
        "doctor" => vec!["doctor".into()],
        "install" => vec!["install".into()],
        "gateway tunnel" => [
            "gateway",
            "--mode",
            "tunnel",
            "--lan",
            "198.51.100.0/24",
            "--no-dns",
            "--tun",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("kl-e{i}")])
        .collect(),
        other => panic!("unknown mode {other}"),
    };
    // `timeout` bounds each run; none may take that long.
    let mut argv: Vec<String> = ["timeout", "60", "kubelan"].map(String::from).to_vec();
    argv.extend(rest);
    argv.push("--kubeconfig".into());
    argv.push(kc.into());
    argv
}

/// Checks one command's output: the line once, its fix, nothing of kube-rs' or hyper's own
/// logging, no debug dump, no line twice, a failing exit code. Returns what is wrong.
fn judge(what: &str, mode: &str, out: &Output, took: Duration) -> Vec<String> {
    let all = text(out);
    let mut wrong = Vec::new();
    let lines: Vec<&str> = all.lines().filter(|l| !l.trim().is_empty()).collect();
    let with = lines.iter().filter(|l| l.contains(expected(what))).count();
    if with != 1 {
        wrong.push(format!("{with} lines say {:?}", expected(what)));
    }
    if !all.contains(fix(what)) {
        wrong.push(format!("the fix {:?} is not named", fix(what)));
    }
    for bad in [
        "Status {",
        "ApiError",
        "ServiceError",
        "ErrorResponse",
        "Some(",
        "os error",
        " ERROR ",
        "failed with error",
    ] {
        if all.contains(bad) {
            wrong.push(format!("prints {bad:?}"));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for l in &lines {
        if !seen.insert(*l) {
            wrong.push(format!("prints {l:?} twice"));
        }
    }
    if mode != "doctor" {
        let errors = lines.iter().filter(|l| l.starts_with("error:")).count();
        if errors != 1 {
            wrong.push(format!("{errors} `error:` lines"));
        }
    }
    match out.status.code() {
        Some(0) => wrong.push("exit code 0".into()),
        Some(124) => wrong.push(format!("still running after {took:?} (killed by timeout)")),
        None => wrong.push(format!("killed by a signal: {}", out.status)),
        Some(_) => {}
    }
    wrong
}

#[test]
fn bad_kubeconfigs_get_one_line_that_names_the_fix() {
    if !lab_available() {
        return;
    }
    let root_before = root_snapshot();
    let lab = Lab::up("badkc", &[]);
    let dir = TempDir::new("kubelan-badkc");
    let good = lab.exec_ok("laptop", &["cat", "/etc/kubelan/kubeconfig"]);
    let breakages = [
        "closed port",
        "wrong token",
        "missing context",
        "unreachable address",
        "unparsable file",
    ];
    let modes = [
        "proxy",
        "connect",
        "forward",
        "doctor",
        "install",
        "gateway tunnel",
    ];
    let mut files = Vec::new();
    for what in breakages {
        let path = dir.join(format!("{}.yaml", what.replace(' ', "-")));
        std::fs::write(&path, broken_kubeconfig(&good, what)).unwrap();
        files.push((what, path.to_string_lossy().into_owned()));
    }
    // A just-created link's IPv6 link-local address gets its local route when duplicate
    // address detection ends: wait for that, so the snapshot only sees our commands.
    wait_for("IPv6 duplicate address detection on the laptop", 10, || {
        lab.exec_ok("laptop", &["ip", "-6", "addr", "show", "tentative"])
            .trim()
            .is_empty()
            .then_some(())
    });
    let laptop_before = host_snapshot(&lab, "laptop");

    // Every combination at once: the unreachable address costs ~3 s of ARP each.
    let started = Instant::now();
    let results: Vec<(&str, &str, Output, Duration)> = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .iter()
            .flat_map(|(what, kc)| modes.iter().map(move |mode| (*what, *mode, kc.as_str())))
            .enumerate()
            .map(|(i, (what, mode, kc))| {
                let lab = &lab;
                s.spawn(move || {
                    let argv = mode_argv(mode, kc, i);
                    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
                    let t = Instant::now();
                    let out = lab.exec("laptop", &argv);
                    (what, mode, out, t.elapsed())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let total = started.elapsed();

    let mut failures = Vec::new();
    for (what, mode, out, took) in &results {
        eprintln!(
            "--- {what} × {mode} ({:.1} s, {}):\n{}",
            took.as_secs_f64(),
            out.status,
            text(out)
        );
        for w in judge(what, mode, out, *took) {
            failures.push(format!("{what} × {mode}: {w}"));
        }
    }
    eprintln!(
        "{} combinations in {:.1} s",
        results.len(),
        total.as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} problems in {} combinations:\n{}",
        failures.len(),
        results.len(),
        failures.join("\n")
    );
    assert_eq!(
        host_snapshot(&lab, "laptop"),
        laptop_before,
        "a failed command changed the laptop"
    );

    // The other answers of the API, with a valid kubeconfig: 403 names the verb, the
    // resource and `kubelan rbac MODE`; a missing agent names `kubelan install`.
    let kc = files[0].1.replace("closed-port", "good");
    std::fs::write(&kc, &good).unwrap();
    let out = lab.exec(
        "laptop",
        &[
            "kubelan",
            "proxy",
            "--listen",
            "127.0.0.1:18100",
            "--kubeconfig",
            &kc,
            "--context",
            "kubelan-lab-developer",
        ],
    );
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains(
            "error: insufficient permissions: missing: list pods in kubelan-system; `kubelan rbac proxy`"
        ),
        "{t}"
    );
    assert_eq!(t.lines().count(), 1, "{t}");
    let out = lab.exec(
        "laptop",
        &[
            "kubelan",
            "proxy",
            "--listen",
            "127.0.0.1:18101",
            "--kubeconfig",
            &kc,
        ],
    );
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("not installed in kubelan-system: run `kubelan install`"),
        "{t}"
    );
    assert_eq!(t.lines().count(), 1, "{t}");
    // `-v` brings the Kubernetes client's own log lines back.
    let closed = &files[0].1;
    let out = lab.exec(
        "laptop",
        &[
            "kubelan",
            "-v",
            "proxy",
            "--listen",
            "127.0.0.1:18102",
            "--kubeconfig",
            closed,
        ],
    );
    assert!(
        text(&out).contains("failed with error"),
        "-v shows kube-rs' lines:\n{}",
        text(&out)
    );

    lab.down();
    assert_eq!(root_snapshot(), root_before, "root namespace changed");
}

#[test]
fn redirect_pitfall_is_warned_about_and_named() {
    if !lab_available() {
        return;
    }
    let root_before = root_snapshot();
    let lab = Lab::up("redir", &[]);
    let cluster = Cluster::new(&lab);
    lab.exec_ok("node1", &["kubelan", "install"]);

    // The README's setup: a tunnel gateway on pc2, a PC of the LAN it serves.
    lab.route_office_to(PC2);
    let gw = Background::start(
        &lab,
        "pc2",
        "gw-tunnel",
        300,
        &format!("kubelan gateway --mode tunnel --lan {LAN} --no-dns"),
    );
    gw.wait_log("gateway ready", 60);
    let log = gw.log();
    assert!(
        log.contains("warning: this gateway serves clients on its own subnet (--lan 172.16.0.0/18, 172.16.0.0/18 on eth0)"),
        "no redirect warning:\n{log}"
    );
    for fix in ["send_redirects=0", "separate segment", "on the PCs"] {
        assert!(log.contains(fix), "the warning does not name {fix}:\n{log}");
    }
    gw.wait_log("✓ connected via", 60);

    // pc1 reaches a pod through the router, which forwards the packets back out the LAN
    // interface to pc2 and tells pc1 (ICMP redirect) to use pc2 directly. pc1 takes a
    // redirect only when it already knows pc2's link-layer address, as PCs of an office
    // LAN usually do. (In the lab a TCP SYN's redirect arrives while the connecting
    // socket is still locked and is dropped, which a real LAN's latency avoids; a ping's
    // redirect is taken as on any LAN.)
    lab.exec_ok("pc1", &["ping", "-c", "1", "-W", "2", PC2]);
    let web = cluster.pod_ip("app=web");
    assert_eq!(http_code(&lab, "pc1", &format!("http://{web}/")), "200");
    // The router spaces its redirects to one host (20 ms, doubling).
    std::thread::sleep(Duration::from_millis(300));
    lab.exec_ok("pc1", &["ping", "-c", "1", "-W", "2", &web]);
    let cached = lab.exec_ok("pc1", &["ip", "route", "get", &web]);
    assert!(
        cached.contains(&format!("via {PC2}")) && cached.contains("redirected"),
        "the lab's router did not redirect pc1: {cached}"
    );

    // The office moves to another gateway (the old one is gone): pc1 still sends to pc2.
    drop(gw);
    lab.route_office_to(NODE1);
    let doc = lab.exec("pc1", &["kubelan", "doctor", "--via", NODE1]);
    let report = text(&doc);
    eprintln!("{report}");
    assert!(!doc.status.success(), "doctor passed:\n{report}");
    let line = report
        .lines()
        .find(|l| l.contains("cached ICMP redirect"))
        .unwrap_or_else(|| panic!("doctor does not name the redirect:\n{report}"));
    assert!(line.starts_with("✗ routes"), "{line}");
    for part in [
        web.as_str(),
        &format!("straight to {PC2} instead of through 172.16.0.1"),
        &format!("not to the gateway {NODE1}"),
    ] {
        assert!(line.contains(part), "{part:?} missing: {line}");
    }
    assert!(report.contains("ip route flush cache"), "{report}");

    drop(cluster);
    lab.down();
    assert_eq!(root_snapshot(), root_before, "root namespace changed");
}

/// `kubelan lab exec` of `argv` on the laptop, started in the background.
fn lab_exec(lab: &Lab, argv: &[&str]) -> std::process::Child {
    kubelan()
        .args(["lab", "exec", "--name", &lab.name, "laptop", "--"])
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lab exec")
}

/// The PID of a child of `pid` that runs `program` (any thread of `pid` may have forked it,
/// so every process's parent is looked at).
fn child_running(pid: u32, program: &str) -> u32 {
    wait_for(&format!("{program} to start under lab exec"), 10, || {
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let child: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let (comm, rest) = stat.rsplit_once(") ")?;
            let comm = &comm[comm.find('(')? + 1..];
            let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == pid && comm == program).then_some(child)
        })
    })
}

#[test]
fn lab_exec_passes_signals_and_exits_with_the_commands_status() {
    if !lab_available() {
        return;
    }
    let lab = Lab::up("labsig", &[]);
    for (sig, code) in [("TERM", 143), ("INT", 130), ("HUP", 129)] {
        let mut exec = lab_exec(&lab, &["sleep", "100"]);
        let sleep = child_running(exec.id(), "sleep");
        assert!(signal(exec.id(), sig), "kill -{sig} {}", exec.id());
        let status = wait_for("lab exec to exit", 10, || exec.try_wait().ok().flatten());
        assert_eq!(
            status.code(),
            Some(code),
            "SIG{sig}: lab exec should exit as its command did ({status})"
        );
        assert!(
            !std::path::Path::new(&format!("/proc/{sleep}")).exists(),
            "SIG{sig}: the command still runs"
        );
    }
    // A command that handles the signal: lab exec exits with the command's own status.
    let mut exec = lab_exec(
        &lab,
        &["sh", "-c", "trap 'kill $!; exit 7' TERM; sleep 100 & wait"],
    );
    child_running(exec.id(), "sh");
    // Give sh a moment to install its trap.
    std::thread::sleep(Duration::from_millis(300));
    assert!(signal(exec.id(), "TERM"), "kill -TERM {}", exec.id());
    let status = wait_for("lab exec to exit", 10, || exec.try_wait().ok().flatten());
    assert_eq!(status.code(), Some(7), "{status}");
    lab.down();
}
