//! End-to-end tests of `kubelan lab` (issue 2's acceptance list): real namespaces, real
//! processes, real kernel networking, and real clients (curl, dig, kubectl, kube-rs).
//! Needs root; CI runs them with `KUBELAN_E2E_REQUIRED=1`.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use kubelan_testkit::{
    Background, Lab, kubelan, lab_available, leftovers, namespace_count, ok, root_snapshot,
    unique_name, wait_for,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn dig(lab: &Lab, from: &str, name: &str) -> Vec<String> {
    let out = lab.exec(from, &["dig", "+short", "+time=1", "+tries=1", name]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn lab_acceptance() {
    if !lab_available() {
        return;
    }
    let before = root_snapshot();
    let lab = Lab::up("acc", &[]);
    eprintln!("lab up took {:.2} s", lab.up_seconds);
    let rt = rt();
    let client = rt.block_on(lab.client());

    // From node1: the Service by DNS name answers 200 with a pod name.
    let out = lab.exec_ok(
        "node1",
        &[
            "curl",
            "-sS",
            "-m",
            "5",
            "-w",
            "%{http_code}",
            "http://web.default.svc.cluster.local",
        ],
    );
    let mut lines = out.lines();
    let body = lines.next().unwrap_or_default();
    assert!(body.starts_with("web-"), "answer names a web pod: {out:?}");
    assert_eq!(lines.next(), Some("200"));

    // 20 requests to the ClusterIP reach both replicas.
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let web = rt.block_on(svcs.get("web")).expect("web service");
    let ip = web.spec.unwrap().cluster_ip.unwrap();
    let mut seen = BTreeSet::new();
    for _ in 0..20 {
        let out = lab.exec_ok(
            "node1",
            &["curl", "-sS", "-m", "5", &format!("http://{ip}/")],
        );
        seen.insert(out.trim().to_string());
    }
    assert_eq!(seen.len(), 2, "both replicas answered: {seen:?}");

    // From a pod: a StatefulSet pod's name resolves to that pod's IP.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let db1_ip = rt
        .block_on(pods.get("db-1"))
        .unwrap()
        .status
        .unwrap()
        .pod_ip
        .unwrap();
    let web_pod = rt
        .block_on(pods.list(&ListParams::default().labels("app=web")))
        .unwrap()
        .items[0]
        .metadata
        .name
        .clone()
        .unwrap();
    // `lab exec` from a directory the pod cannot see (pods have a private /tmp) runs in `/`.
    let host_only = std::env::temp_dir().join(format!("kubelan-e2e-cwd-{}", lab.name));
    std::fs::create_dir_all(&host_only).unwrap();
    let out = ok(kubelan().current_dir(&host_only).args([
        "lab",
        "exec",
        "--name",
        &lab.name,
        &format!("default/{web_pod}"),
        "--",
        "pwd",
    ]));
    assert_eq!(out.trim(), "/");
    let _ = std::fs::remove_dir(&host_only);
    let from = format!("default/{web_pod}");
    wait_for("db-1's name to resolve to its IP from a pod", 2, || {
        (dig(&lab, &from, "db-1.db.default.svc.cluster.local") == vec![db1_ip.clone()])
            .then_some(())
    });

    // From pc1 and laptop, a Pod IP and a ClusterIP are unreachable, and fail fast.
    for host in ["pc1", "laptop"] {
        for target in [db1_ip.as_str(), ip.as_str()] {
            let started = Instant::now();
            let out = lab.exec(
                host,
                &[
                    "curl",
                    "-sS",
                    "-m",
                    "10",
                    "-o",
                    "/dev/null",
                    &format!("http://{target}/"),
                ],
            );
            let took = started.elapsed();
            assert!(!out.status.success(), "{host} must not reach {target}");
            assert!(
                took < Duration::from_secs(3),
                "{host} -> {target} failed fast (took {took:?})"
            );
        }
    }

    laptop_nat_checks(&lab, &rt, &client, true);

    rt.block_on(kube_checks(&lab, client.clone()));

    // kubectl, where installed.
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let kc = lab.kubeconfig();
        let out = ok(Command::new("kubectl").arg("--kubeconfig").arg(&kc).args([
            "get",
            "nodes,pods,svc",
            "-A",
        ]));
        assert!(
            out.contains("node/node1") && out.contains("service/kube-dns"),
            "{out}"
        );
        let manifest = std::env::temp_dir().join(format!("kubelan-e2e-{}.yaml", lab.name));
        std::fs::write(
            &manifest,
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: applied\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: applied}\n  template:\n    metadata:\n      labels: {app: applied}\n    spec:\n      containers:\n      - name: web\n        image: ghcr.io/kubelan/kubelan:dev\n        args: [lab, serve, http, --listen, 0.0.0.0:8080]\n",
        )
        .unwrap();
        let out = ok(Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kc)
            .arg("apply")
            .arg("-f")
            .arg(&manifest));
        assert!(out.contains("deployment.apps/applied created"), "{out}");
        let out = ok(Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kc)
            .arg("apply")
            .arg("-f")
            .arg(&manifest));
        assert!(
            out.contains("unchanged") || out.contains("configured"),
            "{out}"
        );
        ok(Command::new("kubectl").arg("--kubeconfig").arg(&kc).args([
            "rollout",
            "status",
            "deployment/applied",
            "--timeout=30s",
        ]));
        ok(Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kc)
            .arg("delete")
            .arg("-f")
            .arg(&manifest));
        let _ = std::fs::remove_file(&manifest);
    } else {
        eprintln!("kubectl not installed: kubectl checks skipped");
    }

    // Status, human and JSON.
    let st: serde_json::Value = serde_json::from_str(&ok(
        kubelan().args(["lab", "status", "--name", &lab.name, "--output", "json"])
    ))
    .unwrap();
    assert_eq!(st["state"], "running");
    assert_eq!(st["apiVersion"], "kubelan.dev/v1");
    assert_eq!(st["type"], "LabStatus");
    assert_eq!(st["hosts"].as_array().unwrap().len(), 7);
    eprintln!(
        "lab memory: {} processes, {} KiB resident; daemon {} KiB",
        st["processes"], st["total_rss_kib"], st["daemon"]["rss_kib"]
    );

    let started = Instant::now();
    eprintln!("{}", lab.down());
    eprintln!("lab down took {:.2} s", started.elapsed().as_secs_f64());
    assert_eq!(
        leftovers(&lab.name),
        Vec::<String>::new(),
        "lab down leaves nothing"
    );
    assert_eq!(
        root_snapshot(),
        before,
        "the root namespace is byte-identical"
    );
    // A second down is a no-op.
    assert!(lab.down().contains("does not exist"));
}

/// The laptop behind the edge router's NAT (`[edge] nat`, on by default) or not: whether a
/// pod reaches a listener on the laptop, and which source address a node sees for the
/// laptop. Either way the laptop reaches the API server and a NodePort.
fn laptop_nat_checks(
    lab: &Lab,
    rt: &tokio::runtime::Runtime,
    client: &kube::Client,
    behind_nat: bool,
) {
    let seen_as = if behind_nat {
        "10.4.7.254"
    } else {
        "198.51.100.10"
    };
    let st: serde_json::Value = serde_json::from_str(&ok(
        kubelan().args(["lab", "status", "--name", &lab.name, "--output", "json"])
    ))
    .unwrap();
    assert_eq!(st["laptop"]["behind_nat"], behind_nat, "{st}");
    assert_eq!(st["laptop"]["seen_as"], seen_as, "{st}");
    // The NAT's rules live in the edge router's namespace (the root namespace is compared
    // with its snapshot at the end).
    let table = lab.exec(
        "edge-router",
        &["nft", "list", "table", "ip", "kubelan-lab"],
    );
    assert_eq!(
        table.status.success(),
        behind_nat,
        "{}",
        String::from_utf8_lossy(&table.stderr)
    );

    let _laptop_http = Background::start(
        lab,
        "laptop",
        "laptop-http",
        120,
        "kubelan lab serve http --listen 0.0.0.0:18080",
    );
    let _node_http = Background::start(
        lab,
        "node1",
        "node1-http",
        120,
        "kubelan lab serve http --listen 10.4.7.11:18081",
    );
    for (host, url) in [
        ("laptop", "http://127.0.0.1:18080/healthz"),
        ("node1", "http://10.4.7.11:18081/healthz"),
    ] {
        wait_for(&format!("{url} on {host}"), 10, || {
            lab.exec(host, &["curl", "-sf", "-m", "1", url])
                .status
                .success()
                .then_some(())
        });
    }

    // A pod dials the laptop's listener: refused at once behind the NAT; answered, from
    // the pod's node (Flannel's masquerade), without it.
    let started = Instant::now();
    let out = lab.exec(
        "default/db-0",
        &["curl", "-sS", "-m", "10", "http://198.51.100.10:18080/ip"],
    );
    let took = started.elapsed();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if behind_nat {
        assert!(!out.status.success(), "a pod reached the laptop: {said}");
        assert!(
            took < Duration::from_secs(3),
            "pod -> laptop failed fast (took {took:?}): {said}"
        );
    } else {
        assert!(
            out.status.success()
                && (said.starts_with("10.4.7.11:") || said.starts_with("10.4.7.12:")),
            "without the NAT a pod reaches the laptop: {said}"
        );
    }

    // The laptop reaches a node, which sees it as `seen_as`; the API server; a NodePort.
    let ip = lab.exec_ok(
        "laptop",
        &["curl", "-sS", "-m", "5", "http://10.4.7.11:18081/ip"],
    );
    assert!(
        ip.starts_with(&format!("{seen_as}:")),
        "node1 sees the laptop as {seen_as}: {ip}"
    );
    let version = lab.exec_ok(
        "laptop",
        &["curl", "-sSk", "-m", "5", "https://10.4.7.11:6443/version"],
    );
    assert!(version.contains("gitVersion"), "{version}");
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-np"},
        "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80}]}
    }))
    .unwrap();
    let svc = rt
        .block_on(svcs.create(&PostParams::default(), &svc))
        .unwrap();
    let node_port = svc.spec.unwrap().ports.unwrap()[0].node_port.unwrap();
    let url = format!("http://10.4.7.12:{node_port}/");
    let body = wait_for("the NodePort from the laptop", 10, || {
        let out = lab.exec("laptop", &["curl", "-sS", "-m", "2", &url]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    assert!(body.starts_with("web-"), "{body}");
    rt.block_on(svcs.delete("web-np", &DeleteParams::default()))
        .unwrap();
}

async fn kube_checks(lab: &Lab, client: kube::Client) {
    // Nodes list their pod CIDRs.
    let nodes: Api<Node> = Api::all(client.clone());
    let mut cidrs: Vec<String> = nodes
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .flat_map(|n| n.spec.unwrap().pod_cidrs.unwrap())
        .collect();
    cidrs.sort();
    assert_eq!(cidrs, ["172.17.32.0/24", "172.17.33.0/24"]);

    // Create a Deployment with a ClusterIP and a headless Service.
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "extra"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "extra"}},
          "template": {"metadata": {"labels": {"app": "extra"}}, "spec": {"containers": [{
            "name": "web", "image": "ghcr.io/kubelan/kubelan:dev",
            "args": ["lab", "serve", "http", "--listen", "0.0.0.0:8080"],
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1}}]}}}
    }))
    .unwrap();
    deploys.create(&PostParams::default(), &d).await.unwrap();
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc = svcs
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "extra"},
            "spec": {"selector": {"app": "extra"}, "ports": [{"port": 80, "targetPort": "http"}]}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let created = Instant::now();
    svcs.create(
        &PostParams::default(),
        &serde_json::from_value(
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "extra-h"},
        "spec": {"clusterIP": "None", "selector": {"app": "extra"}, "ports": [{"port": 8080}]}}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let cluster_ip = svc.spec.unwrap().cluster_ip.unwrap();
    // DNS answers for the new Service within 2 s.
    let name = "extra.default.svc.cluster.local";
    loop {
        if dig(lab, "node1", name) == vec![cluster_ip.clone()] {
            break;
        }
        assert!(
            created.elapsed() < Duration::from_secs(2),
            "DNS for {name} within 2 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "DNS answered for a new Service after {:?}",
        created.elapsed()
    );

    // Pods Running and Ready; the EndpointSlice lists them.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let ready_ips = |slices: Api<EndpointSlice>| async move {
        let l = slices
            .list(&ListParams::default().labels("kubernetes.io/service-name=extra"))
            .await
            .ok()?;
        let mut ips: Vec<String> = l
            .items
            .iter()
            .flat_map(|s| s.endpoints.iter())
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
            .map(|e| e.addresses[0].clone())
            .collect();
        ips.sort();
        Some(ips)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let ips = loop {
        let ps = pods
            .list(&ListParams::default().labels("app=extra"))
            .await
            .unwrap()
            .items;
        let all_ready = ps.len() == 2
            && ps
                .iter()
                .all(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"));
        let ips = ready_ips(slices.clone()).await.unwrap_or_default();
        if all_ready && ips.len() == 2 {
            break ips;
        }
        assert!(
            Instant::now() < deadline,
            "extra pods Ready and in the EndpointSlice"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Delete a pod: the replacement has a new IP; the EndpointSlice and DNS follow.
    let victim = pods
        .list(&ListParams::default().labels("app=extra"))
        .await
        .unwrap()
        .items[0]
        .clone();
    let victim_ip = victim.status.unwrap().pod_ip.unwrap();
    pods.delete(
        victim.metadata.name.as_deref().unwrap(),
        &DeleteParams::default(),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let new_ips = loop {
        if let Some(ips2) = ready_ips(slices.clone()).await
            && ips2.len() == 2
            && !ips2.contains(&victim_ip)
        {
            break ips2;
        }
        assert!(
            Instant::now() < deadline,
            "replacement in the EndpointSlice"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_ne!(new_ips, ips);
    let followed = Instant::now();
    loop {
        let mut got = dig(lab, "node1", "extra-h.default.svc.cluster.local");
        got.sort();
        if got == new_ips {
            break;
        }
        assert!(
            followed.elapsed() < Duration::from_secs(2),
            "DNS follows the replacement within 2 s (got {got:?}, want {new_ips:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A watch sees create, update and delete in order.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = cms
        .watch(&WatchParams::default().timeout(20), &rv)
        .await
        .unwrap()
        .boxed();
    let cm: ConfigMap = serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "order"}, "data": {"a": "1"}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let mut cm2 = cms.get("order").await.unwrap();
    cm2.data.as_mut().unwrap().insert("a".into(), "2".into());
    cms.replace("order", &PostParams::default(), &cm2)
        .await
        .unwrap();
    cms.delete("order", &DeleteParams::default()).await.unwrap();
    let mut kinds = Vec::new();
    while kinds.len() < 3 {
        let ev = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
            .await
            .expect("watch event")
            .unwrap()
            .unwrap();
        match ev {
            WatchEvent::Added(o) if o.metadata.name.as_deref() == Some("order") => {
                kinds.push("ADDED")
            }
            WatchEvent::Modified(o) if o.metadata.name.as_deref() == Some("order") => {
                kinds.push("MODIFIED")
            }
            WatchEvent::Deleted(o) if o.metadata.name.as_deref() == Some("order") => {
                kinds.push("DELETED")
            }
            _ => {}
        }
    }
    assert_eq!(kinds, ["ADDED", "MODIFIED", "DELETED"]);

    // A port-forward to a pod port (the db pods echo on 5432) echoes 1 MiB intact.
    let mut pf = pods.portforward("db-0", &[5432]).await.unwrap();
    let mut stream = pf.take_stream(5432).unwrap();
    let payload: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let (mut rd, mut wr) = tokio::io::split(&mut stream);
    let sent = payload.clone();
    let (_, got) = tokio::time::timeout(
        Duration::from_secs(30),
        futures::future::join(
            async move { wr.write_all(&sent).await.unwrap() },
            async move {
                let mut got = vec![0u8; 1024 * 1024];
                rd.read_exact(&mut got).await.unwrap();
                got
            },
        ),
    )
    .await
    .expect("port-forward echo in time");
    assert!(got == payload, "1 MiB through port-forward intact");
}

#[test]
fn lab_bad_input_and_crash_cleanup() {
    if !lab_available() {
        return;
    }
    let before = root_snapshot();
    // An invalid config: clear error, nothing created.
    let name = unique_name("bad");
    let cfg = std::env::temp_dir().join(format!("kubelan-bad-{name}.toml"));
    std::fs::write(&cfg, "[cluster]\nservice_cidr = \"172.17.32.0/20\"\n[[nodes]]\nname = \"Node_1\"\naddress = \"10.4.7.11\"\npod_cidr = \"172.17.32.0/24\"\ncontrol_plane = true\n").unwrap();
    let out = kubelan()
        .args(["lab", "up", "--name", &name, "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("nodes[0].name") && err.contains("overlap"),
        "names the problems: {err}"
    );
    assert_eq!(
        leftovers(&name),
        Vec::<String>::new(),
        "an invalid config creates nothing"
    );
    let _ = std::fs::remove_file(&cfg);
    // A bad name.
    let out = kubelan()
        .args(["lab", "up", "--name", "Bad_Name"])
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Bad_Name"));

    // `up` of a name that exists: a clear error, and the first lab is untouched. This lab
    // has the laptop out of the NAT (`[edge] nat = false`): pods reach it again.
    let no_nat = std::env::temp_dir().join(format!("kubelan-nonat-{}.toml", std::process::id()));
    std::fs::write(&no_nat, "[edge]\nnat = false\n").unwrap();
    let lab = Lab::up("dup", &["--config", no_nat.to_str().unwrap()]);
    let _ = std::fs::remove_file(&no_nat);
    let out = kubelan()
        .args(["lab", "up", "--name", &lab.name])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("already exists") && err.contains("lab down"),
        "{err}"
    );
    let st: serde_json::Value = serde_json::from_str(&ok(
        kubelan().args(["lab", "status", "--name", &lab.name, "--output", "json"])
    ))
    .unwrap();
    assert_eq!(st["state"], "running");
    let rt = rt();
    let client = rt.block_on(lab.client());
    laptop_nat_checks(&lab, &rt, &client, false);

    // SIGKILL of the daemon (and so of nothing else): down still removes everything.
    let daemon = st["daemon"]["pid"].as_u64().unwrap();
    ok(Command::new("kill").args(["-9", &daemon.to_string()]));
    lab.down();
    assert_eq!(leftovers(&lab.name), Vec::<String>::new());

    // SIGKILL of `lab up` halfway: down cleans everything.
    for wait_for_netns in [3usize, 9] {
        let name = unique_name("kil");
        let mut child = kubelan()
            .args(["lab", "up", "--name", &name])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_for("namespaces to appear", 20, || {
            (namespace_count(&name) >= wait_for_netns).then_some(())
        });
        child.kill().unwrap();
        let _ = child.wait();
        let out = ok(kubelan().args(["lab", "down", "--name", &name]));
        assert!(out.contains("removed"), "{out}");
        assert_eq!(
            leftovers(&name),
            Vec::<String>::new(),
            "after a SIGKILLed up (at {wait_for_netns} namespaces)"
        );
    }
    // Ctrl-C during `up` removes what was built, without a `down`.
    let name = unique_name("int");
    let child = kubelan()
        .args(["lab", "up", "--name", &name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("namespaces to appear", 20, || {
        (namespace_count(&name) >= 5).then_some(())
    });
    ok(Command::new("kill").args(["-INT", &child.id().to_string()]));
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("interrupted"), "{err}");
    assert_eq!(
        leftovers(&name),
        Vec::<String>::new(),
        "an interrupted up cleans up after itself"
    );
    assert_eq!(
        root_snapshot(),
        before,
        "the root namespace is byte-identical"
    );
}
