//! End-to-end tests of issue 6 on the lab: `kubelan forward` from the laptop, which reaches
//! only the API server. Single forwards that follow pod deletions under a curl loop, the API
//! connections a burst of 100 local connections costs, bulk mode with names in the laptop's
//! hosts file (and `kubelan reset` after `kill -9`), `--no-hosts` without root, and bad
//! input. Needs root; CI runs them with `KUBELAN_E2E_REQUIRED=1`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kubelan_testkit::{Background, Cluster, Lab, curl, lab_available, wait_for};

fn laptop(lab: &Lab, script: &str) -> String {
    lab.exec_ok("laptop", &["sh", "-c", script])
}

/// Ready web pods (not being deleted).
fn ready_web_pods(cluster: &Cluster) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let list = cluster
        .rt
        .block_on(pods.list(&ListParams::default().labels("app=web")))
        .unwrap();
    list.items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .filter_map(|p| p.metadata.name.clone())
        .collect()
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A JSON line of `forward` of this `event`, with its envelope (docs/json.md).
fn is_event(v: &serde_json::Value, event: &str) -> bool {
    v["apiVersion"] == "kubelan.dev/v1" && v["type"] == "ForwardEvent" && v["event"] == event
}

/// The pod the forward's JSON events say `svc/web` goes to now.
fn current_pod(fwd: &Background) -> Option<String> {
    fwd.log()
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| is_event(v, "backend") && v["forward"] == "svc/web")
        .and_then(|v| v["pod"].as_str().map(String::from))
}

/// The latest `stats` totals the forward printed.
fn latest_totals(fwd: &Background) -> Option<serde_json::Value> {
    fwd.log()
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| is_event(v, "stats"))
        .map(|v| v["totals"].clone())
}

/// TCP connections the laptop's network namespace opened so far (`ActiveOpens`).
fn active_opens(lab: &Lab) -> u64 {
    let snmp = laptop(lab, "cat /proc/net/snmp");
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next().unwrap(), tcp.next().unwrap());
    let i = names
        .split_whitespace()
        .position(|n| n == "ActiveOpens")
        .unwrap();
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn forward_follows_pod_restarts() {
    if !lab_available() {
        return;
    }
    let lab = Lab::up("fw", &[]);
    let cluster = Cluster::new(&lab);
    let fwd = Background::start(
        &lab,
        "laptop",
        "forward",
        300,
        "kubelan forward svc/web 8080:80 -o json",
    );
    fwd.wait_log("\"event\":\"ready\"", 30);
    let first = wait_for("the first backend", 10, || current_pod(&fwd));
    let forward_pid = fwd.command_pid();

    // curl in a loop on the laptop; each line: start time, HTTP code (000 = failed), pod.
    let loop_log = format!("/tmp/kubelan-fwd-e2e-{}.log", std::process::id());
    let script = format!(
        "end=$(( $(date +%s) + 90 )); while [ $(date +%s) -lt $end ] && [ ! -e {loop_log}.stop ]; do \
         t=$(date +%s.%N); out=$(curl -s -m 2 -w ' %{{http_code}}' http://localhost:8080/ 2>/dev/null); \
         echo \"$t ${{out##* }} ${{out% *}}\" >> {loop_log}; sleep 0.05; done"
    );
    std::fs::write(format!("{loop_log}.sh"), script).unwrap();
    let curls = Background::start(&lab, "laptop", "curl", 120, &format!("sh {loop_log}.sh"));
    std::thread::sleep(Duration::from_secs(1));

    // A: the backing pod of a two-replica Deployment is deleted: the forward moves to the
    // other replica at once.
    let t_a = now_secs();
    cluster.delete_pod("default", &first);
    wait_for("web back at 2 ready pods", 60, || {
        let r = ready_web_pods(&cluster);
        (r.len() == 2 && !r.contains(&first)).then_some(())
    });
    let moved = wait_for("the forward to move", 10, || {
        current_pod(&fwd).filter(|p| *p != first)
    });
    eprintln!("A: {first} deleted, forward moved to {moved}");

    // B: one replica only; its pod is deleted, so there is a real gap until the
    // replacement is Ready. After that, every request must succeed.
    let deploys: Api<Deployment> = Api::namespaced(cluster.client.clone(), "default");
    cluster
        .rt
        .block_on(deploys.patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 1}})),
        ))
        .unwrap();
    let only = wait_for("one web pod", 60, || {
        let r = ready_web_pods(&cluster);
        let all = cluster
            .rt
            .block_on(
                Api::<Pod>::namespaced(cluster.client.clone(), "default")
                    .list(&ListParams::default().labels("app=web")),
            )
            .ok()?;
        (r.len() == 1 && all.items.len() == 1).then(|| r[0].clone())
    });
    wait_for("the forward on the remaining pod", 15, || {
        (current_pod(&fwd).as_deref() == Some(only.as_str())).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    let t_b = now_secs();
    cluster.delete_pod("default", &only);
    let replacement = wait_for("the replacement pod to be Ready", 60, || {
        ready_web_pods(&cluster).into_iter().find(|p| *p != only)
    });
    let ready_at = now_secs();
    eprintln!(
        "B: {only} deleted, {replacement} Ready {:.2} s later",
        ready_at - t_b
    );
    std::thread::sleep(Duration::from_secs(4));
    std::fs::write(format!("{loop_log}.stop"), "").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    drop(curls);

    let lines = std::fs::read_to_string(&loop_log).unwrap();
    for f in [
        loop_log.clone(),
        format!("{loop_log}.sh"),
        format!("{loop_log}.stop"),
    ] {
        let _ = std::fs::remove_file(f);
    }
    let parsed: Vec<(f64, bool, String)> = lines
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ' ');
            let t: f64 = it.next()?.parse().ok()?;
            let code = it.next()?;
            Some((t, code == "200", it.next().unwrap_or("").to_string()))
        })
        .collect();
    let failed = |from: f64, to: f64| {
        parsed
            .iter()
            .filter(|(t, ok, _)| *t >= from && *t < to && !ok)
            .count()
    };
    let total = parsed.len();
    let during_a = failed(t_a, t_b);
    let during_gap = failed(t_b, ready_at);
    let after = failed(ready_at, f64::MAX);
    let after_ok: Vec<&String> = parsed
        .iter()
        .filter(|(t, ok, _)| *t >= ready_at && *ok)
        .map(|(_, _, pod)| pod)
        .collect();
    eprintln!(
        "{total} requests; failed: {during_a} while a replica was replaced, {during_gap} during the single-pod gap, {after} after the replacement was Ready ({} succeeded after)",
        after_ok.len()
    );
    assert!(total > 50, "the loop ran: {lines}");
    assert!(during_a <= 2, "{lines}");
    assert!(
        during_gap <= 5,
        "at most a few failures during the gap: {lines}"
    );
    assert_eq!(
        after, 0,
        "no failures after the replacement is Ready: {lines}"
    );
    assert!(
        after_ok.len() >= 10 && after_ok.iter().all(|p| **p == replacement),
        "{lines}"
    );
    assert!(alive(forward_pid), "the session never exits");
    assert!(!fwd.log().contains("\"event\":\"stopped\""));

    // A burst of 100 concurrent local connections: API connections it costs, counted by
    // the forward and by the laptop kernel (TCP connections opened, minus curl's own 100).
    let stats_before = {
        fwd.clear_log();
        fwd.wait_log("\"event\":\"stats\"", 10);
        latest_totals(&fwd).unwrap()
    };
    let opens_before = active_opens(&lab);
    let t = Instant::now();
    let codes = laptop(
        &lab,
        "seq 100 | xargs -P 100 -I{} curl -s -m 10 -o /dev/null -w '%{http_code}\\n' http://127.0.0.1:8080/",
    );
    let took = t.elapsed();
    let opens = active_opens(&lab) - opens_before;
    assert_eq!(
        codes.lines().filter(|c| *c == "200").count(),
        100,
        "{codes}"
    );
    fwd.clear_log();
    fwd.wait_log("\"event\":\"stats\"", 10);
    let stats_after = latest_totals(&fwd).unwrap();
    let api = stats_after["api_connections"].as_u64().unwrap()
        - stats_before["api_connections"].as_u64().unwrap();
    eprintln!(
        "burst: 100 curls in {took:?}; the forward opened {api} API connections; the laptop opened {opens} TCP connections (100 are curl's)"
    );
    assert_eq!(api, 100, "one API connection per local connection");
    assert!((200..=203).contains(&opens), "kernel count: {opens}");
    assert!(alive(forward_pid));

    // Ctrl-C ends it cleanly with a summary.
    lab.exec_ok("laptop", &["kill", "-INT", &forward_pid.to_string()]);
    fwd.wait_log("\"event\":\"stopped\"", 10);
    lab.down();
}

#[test]
fn bulk_forward_names_and_reset() {
    if !lab_available() {
        return;
    }
    let lab = Lab::up("fb", &[]);
    let cluster = Cluster::new(&lab);
    let hosts_before = laptop(&lab, "cat /etc/hosts");
    let fwd = Background::start(&lab, "laptop", "bulk", 300, "kubelan forward -n default");
    fwd.wait_log("ready:", 30);
    let hosts = laptop(&lab, "cat /etc/hosts");
    assert!(
        hosts.starts_with(&hosts_before),
        "our block is appended:\n{hosts}"
    );
    assert!(hosts.contains("# BEGIN kubelan forward-"), "{hosts}");
    for url in [
        "http://web/",
        "http://web.default.svc.cluster.local/",
        "http://web.default/",
    ] {
        let (ok, out) = curl(&lab, &["-w", " %{http_code}", url]);
        assert!(
            ok && out.ends_with(" 200") && out.starts_with("web-"),
            "{url}: {out}"
        );
    }
    let echoed = laptop(&lab, "printf kubelan-echo | socat -t 2 - TCP:echo:7");
    assert_eq!(echoed, "kubelan-echo");
    let db = laptop(&lab, "getent hosts db.default.svc.cluster.local");
    assert!(db.starts_with("127."), "{db}");

    // A Service created during the session is reachable by name within 5 s.
    let svcs: Api<Service> = Api::namespaced(cluster.client.clone(), "default");
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web-new"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 8081, "targetPort": "http"}]}
    }))
    .unwrap();
    let created = Instant::now();
    cluster
        .rt
        .block_on(svcs.create(&PostParams::default(), &svc))
        .unwrap();
    let mut reachable = None;
    while created.elapsed() < Duration::from_secs(5) {
        if curl(&lab, &["-m", "1", "http://web-new:8081/"]).0 {
            reachable = Some(created.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let reachable = reachable.expect("web-new reachable by name within 5 s");
    eprintln!("new Service reachable by name after {reachable:?}");
    // Deleted: its name goes away.
    cluster
        .rt
        .block_on(svcs.delete("web-new", &DeleteParams::default()))
        .unwrap();
    wait_for("web-new's name to go", 5, || {
        (!laptop(&lab, "cat /etc/hosts").contains("web-new")).then_some(())
    });

    // kill -9: the crash watcher removes the block within 2 s, restoring the file exactly,
    // and `kubelan reset` then has nothing left to do.
    let pid = fwd.command_pid();
    lab.exec_ok("laptop", &["kill", "-9", &pid.to_string()]);
    let killed = Instant::now();
    let mut fwd = fwd;
    fwd.wait_exit(10);
    wait_for("the crash watcher to remove the hosts block", 2, || {
        (laptop(&lab, "cat /etc/hosts") == hosts_before).then_some(())
    });
    eprintln!("hosts block removed {:?} after kill -9", killed.elapsed());
    let again = laptop(&lab, "kubelan reset");
    assert!(again.contains("nothing to reset"), "{again}");

    // A clean stop removes the block by itself.
    let fwd = Background::start(
        &lab,
        "laptop",
        "bulk2",
        300,
        "kubelan forward -n default -l app=web",
    );
    fwd.wait_log("ready:", 30);
    let hosts = laptop(&lab, "cat /etc/hosts");
    assert!(
        hosts.contains(" web.default ") || hosts.contains(" web.default\n"),
        "{hosts}"
    );
    assert!(
        !hosts.contains("echo.default"),
        "-l selects Services: {hosts}"
    );
    lab.exec_ok("laptop", &["kill", "-TERM", &fwd.command_pid().to_string()]);
    fwd.wait_log("removed kubelan's names", 10);
    assert_eq!(laptop(&lab, "cat /etc/hosts"), hosts_before);

    // --no-hosts works without root: the address table, ports below 1024 moved up.
    let nobody = Background::start(
        &lab,
        "laptop",
        "nobody",
        60,
        "setpriv --reuid=65534 --regid=65534 --clear-groups kubelan forward -n default --no-hosts",
    );
    nobody.wait_log("ready:", 30);
    let log = nobody.log();
    let line = log
        .lines()
        .find(|l| l.contains("\tweb.default.svc.cluster.local"))
        .unwrap_or_else(|| panic!("address table: {log}"));
    let ip = line.split('\t').next().unwrap();
    assert!(line.contains("10080→80"), "{line}");
    let (ok, out) = curl(&lab, &[&format!("http://{ip}:10080/")]);
    assert!(ok && out.starts_with("web-"), "{out}");
    assert_eq!(laptop(&lab, "cat /etc/hosts"), hosts_before);
    drop(nobody);
    lab.down();
}

#[test]
fn forward_bad_input_names_the_fix() {
    if !lab_available() {
        return;
    }
    let lab = Lab::up("fe", &[]);
    let fails = |args: &str| -> String {
        let out = lab.exec(
            "laptop",
            &["sh", "-c", &format!("timeout 20 kubelan forward {args}")],
        );
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{args} must fail: {err}");
        assert!(!err.contains("panicked"), "{err}");
        err
    };
    let e = fails("svc/nope 8080:80");
    assert!(
        e.contains("Service default/nope not found") && e.contains("kubectl get services"),
        "{e}"
    );
    let e = fails("svc/web 8080:8080");
    assert!(
        e.contains("has no port 8080")
            && e.contains("80/TCP (http)")
            && e.contains("`svc/web 8080:80`"),
        "{e}"
    );
    for udp in ["svc/echo 7/udp", "svc/echo 9007:udp"] {
        let e = fails(udp);
        assert!(
            e.contains("TCP only") && e.contains("kubelan proxy") && e.contains("kubelan connect"),
            "{e}"
        );
    }
    let e = fails("web 8080:80");
    assert!(e.contains("write `svc/web`"), "{e}");
    let e = fails("svc/web");
    assert!(e.contains("`svc/web 8080:80`"), "{e}");
    let e = fails("job/x 80");
    assert!(e.contains("svc/NAME"), "{e}");
    // A local port in use.
    let holder = Background::start(
        &lab,
        "laptop",
        "holder",
        60,
        "socat TCP-LISTEN:8080,bind=127.0.0.1,fork -",
    );
    wait_for("the port holder", 10, || {
        laptop(&lab, "cat /proc/net/tcp")
            .lines()
            .any(|l| l.contains(":1F90 ") && l.contains(" 0A "))
            .then_some(())
    });
    let e = fails("svc/web 8080:80");
    assert!(
        e.contains("already in use") && e.contains("svc/web 18080:80"),
        "{e}"
    );
    drop(holder);
    // No RBAC: every missing verb is named, and the command that prints the role.
    let e = fails("--context kubelan-lab-developer svc/web 8080:80");
    for want in [
        "missing: create pods/portforward in default",
        "missing: watch services in default",
        "missing: list endpointslices.discovery.k8s.io in default",
        "kubelan rbac forward",
    ] {
        assert!(e.contains(want), "{want}: {e}");
    }
    let e = fails("--context kubelan-lab-developer -n default -n kube-system");
    assert!(e.contains("create pods/portforward in kube-system"), "{e}");
    // Bulk-only flags with targets, and the reverse.
    let e = fails("svc/web 80 -l app=web");
    assert!(e.contains("bulk mode"), "{e}");
    let e = fails("-n default --address 10.0.0.1");
    assert!(e.contains("127.x.y.z"), "{e}");
    lab.down();
}
