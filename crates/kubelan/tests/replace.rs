//! End-to-end tests of issue 18's `kubelan replace` on the lab: the Service `web`'s
//! traffic comes to the laptop (behind the edge router's NAT) until Ctrl-C, then the
//! Service is as before; after `kill -9` of the client the relay puts it back and
//! Kubernetes removes the session with no kubelan running.
//!
//! The laptop runs a python3 HTTP server on 127.0.0.1:8080 answering `hello from laptop`;
//! `kubelan replace svc/web 8080:80` (web's port 80 has the named targetPort `http`, so
//! the relay declares a port of that name). Clients are curl in a web pod; the web pods
//! answer with their pod name. Also: a second `replace` of `web` is refused naming the
//! holder; a Service without selector is refused; the Flux label on `web` gives a
//! warning; a Service whose targetPort is 80 (the relay binds it unprivileged, through a
//! pod sysctl) is replaced too; the developer with exactly `kubelan rbac replace` succeeds
//! and with one verb less is told which. Needs root; CI runs it with `KUBELAN_E2E_REQUIRED=1`.

use std::time::{Duration, Instant};

use kubelan_testkit::{
    Background, Lab, TempDir, client_pod, kubectl_ok, lab_available, refused, root_snapshot,
    session_objects, wait_for,
};

const SERVER: &str = r#"
import http.server
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        body = b"hello from laptop\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.ThreadingHTTPServer(("127.0.0.1", 8080), H).serve_forever()
"#;

/// Who answers `http://web/` from `pod` (one request; empty on failure).
fn who_answers(lab: &Lab, pod: &str) -> String {
    let out = lab.exec(pod, &["curl", "-sS", "-m", "2", "http://web/"]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// How many of 20 requests from `pod` to `http://web/` the laptop answered.
fn laptop_answers(lab: &Lab, pod: &str) -> usize {
    let out = lab.exec_ok(
        pod,
        &[
            "sh",
            "-c",
            "for i in $(seq 20); do curl -sS -m 5 http://web/; done",
        ],
    );
    out.lines().filter(|l| *l == "hello from laptop").count()
}

/// The Service `web` as JSON without `resourceVersion` and `managedFields`.
fn web_service(lab: &Lab) -> serde_json::Value {
    let json = kubectl_ok(lab, &["get", "service", "web", "-o", "json"]);
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let m = v["metadata"].as_object_mut().unwrap();
    m.remove("resourceVersion");
    m.remove("managedFields");
    v
}

/// `kubelan replace ARGS` on the laptop in the background, until it serves.
fn replace(lab: &Lab, tag: &str, args: &str) -> Background {
    let bg = Background::start(lab, "laptop", tag, 600, &format!("kubelan replace {args}"));
    bg.wait_log("serving ", 90);
    bg
}

fn interrupt(bg: &mut Background) {
    let _ = std::process::Command::new("kill")
        .args(["-INT", &bg.command_pid().to_string()])
        .status();
}

#[test]
fn replace_sends_a_services_traffic_to_the_laptop_and_puts_it_back() {
    if !lab_available() {
        return;
    }
    let before_root = root_snapshot();
    let lab = Lab::up("repl", &[]);
    lab.exec_ok("laptop", &["kubelan", "install"]);
    let dir = TempDir::new("replace");
    let script = format!("{dir}/server.py");
    std::fs::write(&script, SERVER).unwrap();
    let _server = Background::start(&lab, "laptop", "server", 900, &format!("python3 {script}"));
    wait_for("the laptop's server", 20, || {
        let out = lab.exec("laptop", &["curl", "-sf", "http://127.0.0.1:8080/"]);
        out.status.success().then_some(())
    });
    let pod = client_pod(&lab);
    assert!(who_answers(&lab, &pod).starts_with("web-"));
    // Flux applies `web` (so it would put the selector back): replace warns.
    kubectl_ok(
        &lab,
        &[
            "label",
            "service",
            "web",
            "kustomize.toolkit.fluxcd.io/name=apps",
            "kustomize.toolkit.fluxcd.io/namespace=flux-system",
        ],
    );
    let before = web_service(&lab);

    let t0 = Instant::now();
    let mut r = replace(&lab, "replace", "svc/web 8080:80");
    eprintln!("replace served after {:.1} s", t0.elapsed().as_secs_f64());
    assert!(
        r.log().contains("warning: Service web is applied by Flux"),
        "{}",
        r.log()
    );
    assert_eq!(
        laptop_answers(&lab, &pod),
        20,
        "all 20 answered by the laptop"
    );

    // A second replace of web: refused, naming the holder.
    let t = refused(&lab, &["replace", "svc/web", "8081:80"]);
    assert!(t.contains("already replaced by session"), "{t}");
    assert!(
        t.contains("kubernetes-admin") || t.contains(" of "),
        "names the user: {t}"
    );
    assert!(t.contains(" on "), "names the host: {t}");
    // A Service without selector, a port web does not have, a bad argument.
    let file = format!("{dir}/manual.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: manual\nspec:\n  ports:\n  - port: 80\n",
    )
    .unwrap();
    kubectl_ok(&lab, &["apply", "-f", &file]);
    let t = refused(&lab, &["replace", "svc/manual", "8080:80"]);
    assert!(t.contains("has no selector"), "{t}");
    let t = refused(&lab, &["replace", "svc/echo", "8080:81"]);
    assert!(t.contains("has no port 81"), "{t}");
    let t = refused(&lab, &["replace", "web", "8080:80"]);
    assert!(t.contains("svc/NAME"), "{t}");

    // Ctrl-C: the web pods answer again within 2 s, and no request fails on the way:
    // until the Service is back on its pods the laptop still answers.
    interrupt(&mut r);
    let t = Instant::now();
    let mut answers = Vec::new();
    wait_for("the web pods to answer again", 10, || {
        let who = who_answers(&lab, &pod);
        let web = who.starts_with("web-");
        answers.push(who);
        web.then_some(())
    });
    let back = t.elapsed();
    eprintln!(
        "Ctrl-C: web pods answer after {:.2} s; before them: {:?}",
        back.as_secs_f64(),
        &answers[..answers.len() - 1]
    );
    assert!(
        answers
            .iter()
            .all(|a| a == "hello from laptop" || a.starts_with("web-")),
        "a request failed during the hand-back: {answers:?}"
    );
    assert!(back < Duration::from_secs(2), "{back:?}");
    assert!(r.wait_exit(30).success(), "{}", r.log());
    assert!(r.log().contains("restored: Service web"), "{}", r.log());
    assert_eq!(web_service(&lab), before, "the Service is as before");
    wait_for("the session's objects to go", 30, || {
        session_objects(&lab, "default").is_empty().then_some(())
    });

    // A numbered targetPort below 1024: the unprivileged relay binds port 80 through its
    // pod's `net.ipv4.ip_unprivileged_port_start` sysctl.
    let file = format!("{dir}/web80.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web80\nspec:\n  selector:\n    app: web\n  ports:\n  - port: 80\n    targetPort: 80\n",
    )
    .unwrap();
    kubectl_ok(&lab, &["apply", "-f", &file]);
    let mut r = replace(&lab, "replace-80", "svc/web80 8080:80");
    let out = lab.exec_ok(&pod, &["curl", "-sS", "-m", "5", "http://web80/"]);
    assert_eq!(out.trim(), "hello from laptop");
    interrupt(&mut r);
    assert!(r.wait_exit(30).success(), "{}", r.log());
    wait_for("web80's session to go", 30, || {
        session_objects(&lab, "default").is_empty().then_some(())
    });

    rbac(&lab, &pod);

    // kill -9: the relay misses the client, puts web back and exits; Kubernetes deletes
    // the rest.
    let r = replace(&lab, "replace-kill", "svc/web 8080:80");
    assert_eq!(laptop_answers(&lab, &pod), 20);
    let pid = r.command_pid();
    let t = Instant::now();
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
    wait_for("web back and the session gone", 30, || {
        let svc = web_service(&lab);
        let annotated = svc["metadata"]["annotations"]
            .as_object()
            .is_some_and(|a| a.keys().any(|k| k.starts_with("kubelan.io/")));
        (who_answers(&lab, &pod).starts_with("web-")
            && session_objects(&lab, "default").is_empty()
            && !annotated)
            .then_some(())
    });
    eprintln!(
        "kill -9: web restored and the session gone after {:.1} s",
        t.elapsed().as_secs_f64()
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the client is gone"
    );
    assert_eq!(web_service(&lab), before, "the Service is as before");
    drop(r);

    lab.down();
    drop(dir);
    assert_eq!(before_root, root_snapshot(), "root namespace changed");
}

/// The developer with exactly `kubelan rbac replace` (bound in `default`) replaces web;
/// with one verb less the error names it.
fn rbac(lab: &Lab, pod: &str) {
    let printed = lab.exec_ok("laptop", &["kubelan", "rbac", "replace"]);
    let mine = printed.replace("jane@example.com", "developer");
    let dir = TempDir::new("replace");
    let file = format!("{dir}/rbac.yaml");
    std::fs::write(&file, &mine).unwrap();
    kubectl_ok(lab, &["apply", "-f", &file]);
    let mut r = replace(
        lab,
        "replace-dev",
        "svc/web 8080:80 --context kubelan-lab-developer",
    );
    assert_eq!(who_answers(lab, pod), "hello from laptop");
    interrupt(&mut r);
    assert!(r.wait_exit(30).success(), "{}", r.log());
    wait_for("the developer's session to go", 30, || {
        session_objects(lab, "default").is_empty().then_some(())
    });
    // One verb less: no `patch` on services.
    let less = mine.replacen(
        "resources: [\"services\"]\n    verbs: [\"get\", \"patch\"]",
        "resources: [\"services\"]\n    verbs: [\"get\"]",
        1,
    );
    assert_ne!(less, mine, "the printed role has services get/patch");
    std::fs::write(&file, &less).unwrap();
    kubectl_ok(lab, &["apply", "-f", &file]);
    let t = refused(
        lab,
        &[
            "replace",
            "svc/web",
            "8080:80",
            "--context",
            "kubelan-lab-developer",
        ],
    );
    assert!(t.contains("patch services/web"), "names the verb: {t}");
    assert!(t.contains("kubelan rbac replace"), "{t}");
    assert_eq!(session_objects(lab, "default"), Vec::<String>::new());
    drop(dir);
}
