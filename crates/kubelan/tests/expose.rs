//! End-to-end tests of issue 18's `kubelan expose` on the lab: pods reach servers on the
//! laptop, which sits behind the edge router's NAT (no pod can reach it by routing).
//!
//! The laptop runs a small python3 server (HTTP on 127.0.0.1:8080 with a 10 MiB download
//! and an upload that answers the body's SHA-256; a UDP echo on 127.0.0.1:9999) and
//! `kubelan expose 8080 9999/udp 8089 --name dev-api -n team`, in a namespace that
//! enforces Pod Security `restricted`; nothing listens on 8089. Clients are curl and
//! python3 inside a web pod. Then: the same through a port-forward (`--via
//! port-forward`) and Ctrl-C; taken names, bad arguments and an agent too old for reverse
//! flows are refused with one line; the printed RBAC is exactly enough (one verb less is
//! named); `kill -9` of the client leaves nothing behind within 30 s with no kubelan
//! running; a LAN PC's server is exposed from the office. Needs root; CI runs it with
//! `KUBELAN_E2E_REQUIRED=1`.

use std::time::Instant;

use kubelan_testkit::{
    Background, Lab, TempDir, client_pod, kubectl_ok, lab_available, refused, root_snapshot,
    session_objects, text, wait_for,
};

/// The laptop's servers: HTTP on 127.0.0.1:8080 (`/` says who answers, `/big` is 10 MiB,
/// a POST answers the SHA-256 of its body) and a UDP echo on 127.0.0.1:9999. With an
/// argument, HTTP listens on that address instead (a LAN PC).
const SERVER: &str = r#"
import hashlib, http.server, socket, socketserver, sys, threading
BIG = bytes(range(256)) * 40960
NAME = sys.argv[2] if len(sys.argv) > 2 else "laptop"
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def send(self, body):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        self.send(BIG if self.path == "/big" else ("hello from " + NAME + "\n").encode())
    def do_POST(self):
        n = int(self.headers["Content-Length"])
        h = hashlib.sha256()
        while n > 0:
            b = self.rfile.read(min(n, 65536))
            if not b: break
            h.update(b); n -= len(b)
        self.send(h.hexdigest().encode())
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    request_queue_size = 512
def udp():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 9999))
    while True:
        d, a = u.recvfrom(65535)
        u.sendto(b"echo:" + d, a)
if len(sys.argv) < 2:
    threading.Thread(target=udp, daemon=True).start()
S((sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1", 8080), H).serve_forever()
"#;

/// Run in a pod: 10 MiB down and up through `http://$HOST:8080`, both checked by SHA-256.
const BULK: &str = r#"
import hashlib, http.client, sys
host = sys.argv[1]
BIG = bytes(range(256)) * 40960
want = hashlib.sha256(BIG).hexdigest()
c = http.client.HTTPConnection(host, 8080, timeout=30)
c.request("GET", "/big")
got = hashlib.sha256(c.getresponse().read()).hexdigest()
c.request("POST", "/sha", body=BIG)
up = c.getresponse().read().decode()
print("down", "ok" if got == want else "BAD " + got, "up", "ok" if up == want else "BAD " + up)
"#;

/// Run in a pod: 200 connections at once to `http://$HOST:8080/`, each a GET; prints how
/// many answered from the laptop.
const MANY: &str = r#"
import socket, sys, threading
host, n = sys.argv[1], 200
ok, lock, go = [0], threading.Lock(), threading.Event()
def one():
    go.wait()
    try:
        s = socket.create_connection((host, 8080), timeout=20)
        s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        data = b""
        while True:
            b = s.recv(4096)
            if not b: break
            data += b
        if b"hello from laptop" in data:
            with lock: ok[0] += 1
    except Exception as e:
        print("failed:", e)
ts = [threading.Thread(target=one) for _ in range(n)]
for t in ts: t.start()
go.set()
for t in ts: t.join()
print("answered", ok[0], "of", n)
"#;

/// Run in a pod: five datagrams to `$HOST:9999`; prints the answers.
const UDP: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
got = []
for i in range(5):
    for _ in range(3):
        s.sendto(b"ping-%d" % i, (sys.argv[1], 9999))
        try:
            got.append(s.recv(100).decode()); break
        except socket.timeout:
            pass
print(" ".join(got))
"#;

const NS: &str = "team";

/// A python3 program run in the client pod with arguments.
fn in_pod(lab: &Lab, pod: &str, code: &str, args: &[&str]) -> String {
    let mut argv = vec!["timeout", "120", "python3", "-c", code];
    argv.extend_from_slice(args);
    lab.exec_ok(pod, &argv)
}

/// `kubelan expose ARGS` on `host` in the background, until it serves.
fn expose(lab: &Lab, host: &str, tag: &str, args: &str) -> Background {
    let bg = Background::start(lab, host, tag, 600, &format!("kubelan expose {args}"));
    bg.wait_log("serving ", 90);
    bg
}

#[test]
fn expose_serves_pods_from_behind_a_nat() {
    if !lab_available() {
        return;
    }
    let before = root_snapshot();
    let lab = Lab::up("expose", &[]);
    lab.exec_ok("laptop", &["kubelan", "install"]);
    let dir = TempDir::new("expose");
    let ns_file = format!("{dir}/ns.yaml");
    std::fs::write(
        &ns_file,
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NS}\n  labels:\n    pod-security.kubernetes.io/enforce: restricted\n"
        ),
    )
    .unwrap();
    kubectl_ok(&lab, &["apply", "-f", &ns_file]);
    // The namespace really enforces `restricted`: a plain pod is refused.
    let pod_file = format!("{dir}/plain.yaml");
    std::fs::write(
        &pod_file,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: plain\n  namespace: {NS}\nspec:\n  containers:\n  - name: c\n    image: kubelan\n    command: [sleep, \"1\"]\n"
        ),
    )
    .unwrap();
    let out = lab.exec("laptop", &["kubectl", "apply", "-f", &pod_file]);
    assert!(
        text(&out).contains("violates PodSecurity \"restricted:latest\""),
        "{}",
        text(&out)
    );

    let script = format!("{dir}/server.py");
    std::fs::write(&script, SERVER).unwrap();
    let _server = Background::start(&lab, "laptop", "server", 600, &format!("python3 {script}"));
    wait_for("the laptop's server", 20, || {
        let out = lab.exec("laptop", &["curl", "-sf", "http://127.0.0.1:8080/"]);
        out.status.success().then_some(())
    });
    let pod = client_pod(&lab);

    // Behind the NAT: a pod cannot reach the laptop's address, even on a port open to all.
    let open = Background::start(
        &lab,
        "laptop",
        "open",
        600,
        "python3 -m http.server 8090 --bind 0.0.0.0",
    );
    wait_for("the open server", 20, || {
        let out = lab.exec("laptop", &["curl", "-sf", "http://198.51.100.10:8090/"]);
        out.status.success().then_some(())
    });
    let out = lab.exec(
        &pod,
        &["curl", "-sS", "-m", "3", "http://198.51.100.10:8090/"],
    );
    assert!(
        !out.status.success(),
        "a pod reached the laptop: {}",
        text(&out)
    );
    drop(open);

    // expose through the agent (the default with an agent installed).
    let t0 = Instant::now();
    let ex = expose(
        &lab,
        "laptop",
        "expose",
        &format!("8080 9999/udp 8089 --name dev-api -n {NS}"),
    );
    eprintln!("expose served after {:.1} s", t0.elapsed().as_secs_f64());
    assert!(
        ex.log().contains("via flow through the agent session"),
        "{}",
        ex.log()
    );
    let fqdn = format!("dev-api.{NS}.svc.cluster.local");
    let body = lab.exec_ok(
        &pod,
        &["curl", "-sS", "-m", "5", &format!("http://{fqdn}:8080/")],
    );
    assert_eq!(body.trim(), "hello from laptop");
    let short = lab.exec_ok(
        &pod,
        &[
            "curl",
            "-sS",
            "-m",
            "5",
            &format!("http://dev-api.{NS}:8080/"),
        ],
    );
    assert_eq!(short.trim(), "hello from laptop");
    let bulk = in_pod(&lab, &pod, BULK, &[&fqdn]);
    assert_eq!(bulk.trim(), "down ok up ok", "10 MiB each way");
    let many = in_pod(&lab, &pod, MANY, &[&fqdn]);
    assert!(many.contains("answered 200 of 200"), "{many}");
    let udp = in_pod(&lab, &pod, UDP, &[&fqdn]);
    assert_eq!(
        udp.trim(),
        "echo:ping-0 echo:ping-1 echo:ping-2 echo:ping-3 echo:ping-4"
    );
    // Nothing listens on the laptop's 8089: the pod's connection is reset, and the
    // session keeps serving.
    let out = lab.exec(
        &pod,
        &["curl", "-sS", "-m", "5", &format!("http://{fqdn}:8089/")],
    );
    let t = text(&out);
    // The relay resets the pod's connection as soon as the laptop answers `Failed`: curl
    // says "reset" (56), or "couldn't connect" (7) when the reset comes before it has
    // looked at its connected socket; never a timeout (28) or an answer.
    assert!(
        matches!(out.status.code(), Some(7 | 56)),
        "a reset, not a timeout or an answer: {t}"
    );
    ex.wait_log("127.0.0.1:8089: Connection refused", 10);
    let body = lab.exec_ok(
        &pod,
        &["curl", "-sS", "-m", "5", &format!("http://{fqdn}:8080/")],
    );
    assert_eq!(body.trim(), "hello from laptop");
    // The relay pod of a `restricted` namespace: it was admitted, so it passes.
    let relay = kubectl_ok(
        &lab,
        &[
            "get",
            "pods",
            "-n",
            NS,
            "-l",
            "kubelan.io/session",
            "-o",
            "jsonpath={.items[0].spec.securityContext.runAsNonRoot} {.items[0].spec.containers[0].securityContext.allowPrivilegeEscalation}",
        ],
    );
    assert_eq!(relay.trim(), "true false");

    // Taken names and bad arguments: one line each, nothing created.
    let t = refused(&lab, &["expose", "8080", "--name", "web"]);
    assert!(t.contains("replace"), "suggests replace: {t}");
    for (args, says) in [
        (&["expose", "70000"][..], "70000"),
        (&["expose", "8080/sctp"], "sctp"),
        (&["expose", "::1:80"], "brackets"),
        (&["expose", "8080", "--name", "Bad_Name"], "Bad_Name"),
    ] {
        let t = refused(&lab, args);
        assert!(t.contains(says), "{args:?}: {t}");
    }
    assert_eq!(session_objects(&lab, "default"), Vec::<String>::new());

    // Through a port-forward to the relay pod, then Ctrl-C: everything goes.
    let mut pf = expose(
        &lab,
        "laptop",
        "expose-pf",
        "8080 --name dev-pf --via port-forward",
    );
    assert!(
        pf.log().contains("via API-server port-forward"),
        "{}",
        pf.log()
    );
    let body = lab.exec_ok(&pod, &["curl", "-sS", "-m", "5", "http://dev-pf:8080/"]);
    assert_eq!(body.trim(), "hello from laptop");
    // One TCP port without --port: the Service also answers on 80.
    let body = lab.exec_ok(
        &pod,
        &[
            "curl",
            "-sS",
            "-m",
            "5",
            "http://dev-pf.default.svc.cluster.local",
        ],
    );
    assert_eq!(body.trim(), "hello from laptop");
    let t = Instant::now();
    let _ = std::process::Command::new("kill")
        .args(["-INT", &pf.command_pid().to_string()])
        .status();
    assert!(pf.wait_exit(30).success(), "{}", pf.log());
    wait_for("dev-pf's objects to go", 30, || {
        (session_objects(&lab, "default").is_empty()
            && lab
                .exec("laptop", &["kubectl", "get", "service", "dev-pf"])
                .status
                .code()
                == Some(1))
        .then_some(())
    });
    eprintln!(
        "Ctrl-C: dev-pf gone after {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // kill -9: the relay misses the client, exits, and Kubernetes deletes the session.
    let pid = ex.command_pid();
    let t = Instant::now();
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
    wait_for("dev-api's objects to go", 30, || {
        (session_objects(&lab, NS).is_empty()
            && lab
                .exec(
                    "laptop",
                    &["kubectl", "get", "service", "dev-api", "-n", NS],
                )
                .status
                .code()
                == Some(1))
        .then_some(())
    });
    eprintln!(
        "kill -9: dev-api gone after {:.1} s",
        t.elapsed().as_secs_f64()
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the client is gone"
    );
    drop(ex);

    rbac(&lab, &pod);
    office(&lab);

    // An agent without reverse flows (its image would have no `kubelan relay`).
    kubectl_ok(
        &lab,
        &[
            "-n",
            "kubelan-system",
            "set",
            "env",
            "deployment/kubelan-agent",
            "KUBELAN_AGENT_HIDE_CAPS=16",
        ],
    );
    wait_for("the masked agent", 60, || {
        let pods = kubectl_ok(
            &lab,
            &[
                "-n",
                "kubelan-system",
                "get",
                "pods",
                "-o",
                "jsonpath={range .items[*]}{.status.phase} {.spec.containers[0].env}{\"\\n\"}{end}",
            ],
        );
        let lines: Vec<&str> = pods.lines().collect();
        (lines.len() == 1 && lines[0].starts_with("Running") && lines[0].contains("HIDE_CAPS"))
            .then_some(())
    });
    let t = refused(&lab, &["expose", "8080", "--name", "old"]);
    assert!(t.contains("does not support reverse flows"), "{t}");
    assert!(t.contains("protocol 1"), "names both versions: {t}");
    assert_eq!(session_objects(&lab, "default"), Vec::<String>::new());

    lab.down();
    drop(dir);
    assert_eq!(before, root_snapshot(), "root namespace changed");
}

/// The developer with exactly `kubelan rbac expose` (bound in `team`) exposes; with one
/// verb less the error names it.
fn rbac(lab: &Lab, pod: &str) {
    let printed = lab.exec_ok("laptop", &["kubelan", "rbac", "expose"]);
    let mine = printed
        .replace("jane@example.com", "developer")
        .replace("namespace: default", &format!("namespace: {NS}"));
    let dir = TempDir::new("expose");
    let file = format!("{dir}/rbac.yaml");
    std::fs::write(&file, &mine).unwrap();
    kubectl_ok(lab, &["apply", "-f", &file]);
    let mut ex = expose(
        lab,
        "laptop",
        "expose-dev",
        &format!("8080 --name dev-rbac -n {NS} --context kubelan-lab-developer"),
    );
    let body = lab.exec_ok(
        pod,
        &[
            "curl",
            "-sS",
            "-m",
            "5",
            &format!("http://dev-rbac.{NS}:8080/"),
        ],
    );
    assert_eq!(body.trim(), "hello from laptop");
    let _ = std::process::Command::new("kill")
        .args(["-INT", &ex.command_pid().to_string()])
        .status();
    assert!(ex.wait_exit(30).success(), "{}", ex.log());
    // One verb less: no `create` on services.
    let less = mine.replacen(
        "resources: [\"services\"]\n    verbs: [\"get\", \"create\"]",
        "resources: [\"services\"]\n    verbs: [\"get\"]",
        1,
    );
    assert_ne!(less, mine, "the printed role has services get/create");
    std::fs::write(&file, &less).unwrap();
    kubectl_ok(lab, &["apply", "-f", &file]);
    let t = refused(
        lab,
        &[
            "expose",
            "8080",
            "--name",
            "dev-rbac",
            "-n",
            NS,
            "--context",
            "kubelan-lab-developer",
        ],
    );
    assert!(t.contains("create services"), "names the verb: {t}");
    assert!(t.contains("kubelan rbac expose"), "{t}");
    wait_for("no session objects in team", 30, || {
        session_objects(lab, NS).is_empty().then_some(())
    });
    drop(dir);
}

/// The office: on a tunnel gateway (pc2), `kubelan expose 172.16.1.11:8080` gives pods
/// pc1's server.
fn office(lab: &Lab) {
    lab.route_office_to("172.16.1.12");
    let dir = TempDir::new("expose");
    let script = format!("{dir}/server.py");
    std::fs::write(&script, SERVER).unwrap();
    let _pc1 = Background::start(
        lab,
        "pc1",
        "pc1-server",
        600,
        &format!("python3 {script} 172.16.1.11 pc1"),
    );
    let gw = Background::start(
        lab,
        "pc2",
        "gw-tunnel",
        600,
        "kubelan gateway --mode tunnel --lan 172.16.0.0/18",
    );
    gw.wait_log("gateway ready", 60);
    wait_for("pc1's server", 20, || {
        let out = lab.exec("pc2", &["curl", "-sf", "http://172.16.1.11:8080/"]);
        out.status.success().then_some(())
    });
    let ex = expose(lab, "pc2", "expose-pc1", "172.16.1.11:8080 --name pc1-app");
    let pod = client_pod(lab);
    let body = lab.exec_ok(&pod, &["curl", "-sS", "-m", "5", "http://pc1-app:8080/"]);
    assert_eq!(body.trim(), "hello from pc1");
    drop(ex);
    drop(gw);
    drop(dir);
}
