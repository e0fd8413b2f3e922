//! End-to-end test of issue 17 item 3 on the lab: a `kubelan proxy` shared with the
//! office LAN resists password guessing. The proxy runs on the office router
//! (172.16.0.1, reachable from both PCs and from the node network); pc1 guesses, pc2 is
//! a legitimate user. Needs root; CI runs it with `KUBELAN_E2E_REQUIRED=1`.
//!
//! Before throttling, the same 300 SOCKS5 guesses from pc1 were all answered in 0.26 s
//! and 300 HTTP guesses (curl) in 4.3 s, with 600 log lines.

use kubelan_testkit::{Background, Lab, lab_available, root_snapshot, text};

const ROUTER_LAN: &str = "172.16.0.1";
/// A second address of pc1, so that its HTTP guesses start with a clean slate.
const PC1_SECOND: &str = "172.16.1.21";
const WEB: &str = "http://web.default.svc.cluster.local/";
const USER: &str = "dev";

/// Fast SOCKS5 guessing, one connection per password, as a guessing script does.
/// Prints `answered=N refused=N accepted=N seconds=F`; bounded to 300 tries and 60 s.
const GUESS_PY: &str = r#"
import socket, sys, time
host, port, n, user = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].encode()
answered = refused = accepted = 0
t0 = time.monotonic()
for i in range(min(n, 300)):
    if time.monotonic() - t0 > 60:
        break
    pw = b"guess%d" % i
    try:
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(b"\x05\x01\x02")
            if s.recv(2) != b"\x05\x02":
                refused += 1
                continue
            s.sendall(bytes([1, len(user)]) + user + bytes([len(pw)]) + pw)
            r = s.recv(2)
            if r == b"\x01\x00":
                accepted += 1
            elif len(r) == 2:
                answered += 1
            else:
                refused += 1
    except OSError:
        refused += 1
print("answered=%d refused=%d accepted=%d seconds=%.3f" % (answered, refused, accepted, time.monotonic() - t0))
"#;

/// Silent connections, as a slow-handshake attack opens them: `n` connections that send
/// nothing, held for `hold` seconds. Prints `open=N closed=N` (closed by the proxy within
/// a second of opening). Bounded to 200 connections.
const SILENT_PY: &str = r#"
import socket, sys, time
host, port, n, hold = sys.argv[1], int(sys.argv[2]), min(int(sys.argv[3]), 200), float(sys.argv[4])
socks = [socket.create_connection((host, port), timeout=5) for _ in range(n)]
time.sleep(1.0)
closed = 0
for s in socks:
    s.setblocking(False)
    try:
        if s.recv(1) == b"":
            closed += 1
    except BlockingIOError:
        pass
    except OSError:
        closed += 1
print("open=%d closed=%d" % (n - closed, closed), flush=True)
time.sleep(max(0.0, hold - 1.0))
"#;

/// The value of `key=` in a `k=v k=v` line.
fn field(line: &str, key: &str) -> f64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

#[test]
fn lan_auth_resists_guessing() {
    if !lab_available() {
        return;
    }
    let root_before = root_snapshot();
    let lab = Lab::up("pa", &[]);
    lab.exec_ok("node1", &["kubelan", "install"]);

    // Lab hosts share the machine's /tmp; the directory is this test's own.
    let dir = std::env::temp_dir().join(format!("kubelan-auth-{}", lab.name));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let password = format!(
        "pw-{}-{}",
        lab.name,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let auth_file = dir.join("auth");
    let auth_path = auth_file.to_str().unwrap().to_string();
    std::fs::write(&auth_file, format!("{USER}:{password}\n")).unwrap();

    // A credentials file others can read is refused, naming the fix.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&auth_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = lab.exec(
        "office-router",
        &[
            "kubelan",
            "proxy",
            "--allow-lan",
            "--listen",
            &format!("{ROUTER_LAN}:1080"),
            "--auth-file",
            &auth_path,
        ],
    );
    assert!(
        !out.status.success(),
        "a 0644 credentials file was accepted"
    );
    assert!(
        text(&out).contains(&format!("chmod 600 {auth_path}")),
        "{}",
        text(&out)
    );
    std::fs::set_permissions(&auth_file, std::fs::Permissions::from_mode(0o600)).unwrap();

    // The two documented forms: --auth-file (1080) and the environment (1081).
    let file_proxy = Background::start(
        &lab,
        "office-router",
        "proxy-file",
        300,
        &format!("kubelan proxy --allow-lan --listen {ROUTER_LAN}:1080 --auth-file {auth_path}"),
    );
    let env_proxy = Background::start(
        &lab,
        "office-router",
        "proxy-env",
        300,
        &format!(
            "sh -c 'export KUBELAN_PROXY_AUTH=\"$(cat {auth_path})\"; exec kubelan proxy --allow-lan --listen {ROUTER_LAN}:1081'"
        ),
    );
    // --auth still works but warns beyond loopback.
    let flag_proxy = Background::start(
        &lab,
        "office-router",
        "proxy-flag",
        60,
        &format!("kubelan proxy --allow-lan --listen {ROUTER_LAN}:1082 --auth {USER}:visible"),
    );
    flag_proxy.wait_log("warning: --auth puts the password on the command line", 30);
    drop(flag_proxy);
    file_proxy.wait_log("✓ connected via", 60);
    env_proxy.wait_log("✓ connected via", 60);

    // Nobody on the machine sees the password in the process list.
    let ps = lab.exec_ok("pc1", &["ps", "-eo", "args"]);
    assert!(
        ps.contains(&format!("--auth-file {auth_path}")),
        "the proxy is not in ps:\n{ps}"
    );
    assert!(
        !ps.contains(&password),
        "the password is visible in ps:\n{ps}"
    );

    // Both forms check the password, over SOCKS5 and HTTP; without credentials SOCKS5
    // gets "no acceptable method" and HTTP a 407 challenge.
    let curl = |host: &str, args: &[&str]| {
        let mut argv = vec![
            "curl",
            "-sS",
            "-m",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ];
        argv.extend_from_slice(args);
        let out = lab.exec(host, &argv);
        (out.status.success(), text(&out))
    };
    let right = format!("{USER}:{password}");
    for port in [1080, 1081] {
        let proxy = format!("{ROUTER_LAN}:{port}");
        let (good, out) = curl("pc2", &["-x", &format!("socks5h://{right}@{proxy}"), WEB]);
        assert!(
            good && out == "200",
            "SOCKS5 with the right password on {port}: {out}"
        );
        let (good, out) = curl(
            "pc2",
            &[
                "-x",
                &format!("http://{proxy}"),
                "--proxy-user",
                &right,
                WEB,
            ],
        );
        assert!(
            good && out == "200",
            "HTTP with the right password on {port}: {out}"
        );
    }
    let (good, out) = curl(
        "pc2",
        &["--socks5-hostname", &format!("{ROUTER_LAN}:1080"), WEB],
    );
    assert!(
        !good && out.contains("No authentication method was acceptable"),
        "SOCKS5 without credentials: {out}"
    );
    let challenge = lab.exec_ok(
        "pc2",
        &[
            "curl",
            "-s",
            "-i",
            "-m",
            "5",
            "-x",
            &format!("http://{ROUTER_LAN}:1080"),
            WEB,
        ],
    );
    assert!(
        challenge.starts_with("HTTP/1.1 407")
            && challenge
                .to_ascii_lowercase()
                .contains("proxy-authenticate: basic realm=\"kubelan\""),
        "{challenge}"
    );

    // pc2 keeps using the proxy (SOCKS5 and HTTP, right password) while pc1 guesses.
    let stop = dir.join("stop");
    let client_loop = format!(
        "i=0; while [ $i -lt 400 ]; do \
           if [ -e {stop} ]; then echo stopped; exit 0; fi; i=$((i+1)); \
           s=$(curl -s -o /dev/null -w '%{{http_code}}' -m 5 -x socks5h://{right}@{ROUTER_LAN}:1080 {WEB}); \
           h=$(curl -s -o /dev/null -w '%{{http_code}}' -m 5 -x http://{ROUTER_LAN}:1080 --proxy-user {right} {WEB}); \
           echo \"$s $h\"; sleep 0.2; \
         done",
        stop = stop.display()
    );
    /// Ends pc2's loop when the attacks are over, also when one of them fails.
    struct StopFile<'a>(&'a std::path::Path);
    impl Drop for StopFile<'_> {
        fn drop(&mut self) {
            let _ = std::fs::write(self.0, "");
        }
    }
    let (socks, http, locked_http, client) = std::thread::scope(|scope| {
        let client =
            scope.spawn(|| lab.exec_ok("pc2", &["timeout", "240", "sh", "-c", &client_loop]));
        let stop_guard = StopFile(&stop);
        // SOCKS5: 300 wrong passwords as fast as the proxy answers.
        let socks = lab.exec(
            "pc1",
            &["python3", "-c", GUESS_PY, ROUTER_LAN, "1080", "300", USER],
        );
        // HTTP: 300 wrong passwords with curl, from pc1's second address.
        lab.exec_ok(
            "pc1",
            &[
                "ip",
                "addr",
                "add",
                &format!("{PC1_SECOND}/18"),
                "dev",
                "eth0",
            ],
        );
        let http_loop = format!(
            "a=$(date +%s%N); \
             for i in $(seq 300); do \
               curl -s -o /dev/null -w '%{{http_code}}\\n' -m 5 --interface {PC1_SECOND} \
                 -x http://{ROUTER_LAN}:1080 --proxy-user {USER}:guess$i {WEB}; \
             done | sort | uniq -c; \
             b=$(date +%s%N); echo \"ms=$(( (b - a) / 1000000 ))\""
        );
        let http = lab.exec("pc1", &["timeout", "120", "sh", "-c", &http_loop]);
        // The SOCKS-locked address gets nothing over HTTP either, right password or not:
        // one limiter for both protocols.
        let locked_http = curl(
            "pc1",
            &[
                "-x",
                &format!("http://{ROUTER_LAN}:1080"),
                "--proxy-user",
                &right,
                WEB,
            ],
        );
        drop(stop_guard);
        (
            text(&socks),
            text(&http),
            locked_http,
            client.join().unwrap(),
        )
    });
    let (good, code) = locked_http;
    assert!(
        !good && code.starts_with("000"),
        "locked-out pc1 over HTTP: {code}"
    );

    // SOCKS5: three free failures, answers held 0.25, 0.5, 1, 2, 2, 2 s, then the tenth
    // failure locks pc1 out (its answer held 2 s too): ~9.75 s for 10 evaluated guesses,
    // the other 290 closed at once.
    let line = socks.lines().last().unwrap_or("");
    let (answered, refused, accepted, secs) = (
        field(line, "answered"),
        field(line, "refused"),
        field(line, "accepted"),
        field(line, "seconds"),
    );
    eprintln!("300 SOCKS5 guesses from pc1: {line}");
    assert_eq!(accepted, 0.0);
    assert!(answered <= 10.0, "{answered} guesses evaluated: {line}");
    assert_eq!(answered + refused, 300.0, "{line}");
    assert!(secs >= 7.0, "300 guesses took only {secs} s: {line}");

    // HTTP: the same schedule for the second address.
    eprintln!("300 HTTP guesses from pc1 ({PC1_SECOND}):\n{http}");
    let count = |code: &str| -> u32 {
        http.lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let n: u32 = w.next()?.parse().ok()?;
                (w.next()? == code).then_some(n)
            })
            .sum()
    };
    let ms = http
        .lines()
        .find_map(|l| l.strip_prefix("ms="))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no timing in {http}"));
    assert!(count("407") <= 10, "{http}");
    assert_eq!(count("407") + count("000") + count("429"), 300, "{http}");
    assert!(count("200") == 0, "{http}");
    assert!(ms >= 7000, "300 HTTP guesses took only {ms} ms");

    // pc2 succeeded on every try, throughout.
    let tries: Vec<&str> = client.lines().filter(|l| *l != "stopped").collect();
    eprintln!("pc2: {} tries during the attacks", tries.len());
    assert!(
        client.contains("stopped"),
        "pc2's loop ended early:\n{client}"
    );
    assert!(tries.len() >= 20, "too few tries from pc2:\n{client}");
    assert!(
        tries.iter().all(|l| *l == "200 200"),
        "pc2 failed during the attack:\n{client}"
    );

    // Failures are logged in aggregate, not once per guess.
    file_proxy.wait_log("failed login(s) in the last", 15);
    let log = file_proxy.log();
    let auth_lines = log.lines().filter(|l| l.contains("failed login")).count();
    eprintln!("{auth_lines} log lines about failed logins");
    assert!(auth_lines <= 10, "{auth_lines} lines:\n{log}");

    // Silent connections: pc1 opens 100 that never send their handshake. The proxy keeps
    // 64 of them (the per-source limit) and closes the rest at accept; pc2 is unaffected.
    let silent = std::thread::scope(|scope| {
        let attack = scope.spawn(|| {
            lab.exec_ok(
                "pc1",
                &["python3", "-c", SILENT_PY, ROUTER_LAN, "1081", "100", "4"],
            )
        });
        std::thread::sleep(std::time::Duration::from_millis(2000));
        let (good, out) = curl(
            "pc2",
            &["-x", &format!("socks5h://{right}@{ROUTER_LAN}:1081"), WEB],
        );
        assert!(
            good && out == "200",
            "pc2 during the silent connections: {out}"
        );
        attack.join().unwrap()
    });
    eprintln!("100 silent connections from pc1: {}", silent.trim());
    assert_eq!(field(&silent, "open"), 64.0, "{silent}");
    assert_eq!(field(&silent, "closed"), 36.0, "{silent}");
    env_proxy.wait_log("connections in their handshake already (the limit)", 15);
    let lines = env_proxy
        .log()
        .lines()
        .filter(|l| l.contains("in their handshake already"))
        .count();
    assert!(lines <= 2, "{lines} lines about 36 closed connections");

    drop(file_proxy);
    drop(env_proxy);
    let _ = std::fs::remove_dir_all(&dir);
    lab.down();
    assert_eq!(root_snapshot(), root_before, "the root namespace changed");
}
