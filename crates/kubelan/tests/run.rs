//! End-to-end test of `kubelan run` (issue 18, item 3) on the lab, with a real registry:
//! Debian's etcd in a lab pod. On the laptop (behind NAT, reaching the cluster through
//! `kubelan connect`) a program started by `kubelan run --expose 8080` registers
//! `$KUBELAN_CLUSTER_IP:8080` in etcd and serves HTTP; a pod reads the key and calls that
//! address, and the laptop answers. Then the session's end: SIGTERM passed on to the
//! program and its status returned, a failing program's status returned, and `kill -9` of
//! kubelan taking the program with it while Kubernetes removes the session's objects.
//! Needs root; CI runs it with `KUBELAN_E2E_REQUIRED=1`.

use std::process::Command;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, PostParams};
use kubelan_testkit::{
    Background, Cluster, Lab, TempDir, lab_available, pods_of, root_snapshot, wait_for,
};

/// Objects of `kubelan run` sessions, in every namespace.
const RUN_OBJECTS: &str = "kubelan.io/mode=run";

/// etcd (Debian's `etcd-server`) as a pod with a Service `etcd`, its data in the pod's
/// private /tmp.
fn start_etcd(cluster: &Cluster) {
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let services: Api<Service> = Api::namespaced(cluster.client.clone(), "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "etcd", "labels": {"app": "etcd"}},
        "spec": {"containers": [{
            "name": "etcd", "image": "registry.k8s.io/etcd",
            "command": ["etcd", "--name", "lab", "--data-dir", "/tmp/etcd",
                "--listen-client-urls", "http://0.0.0.0:2379",
                "--advertise-client-urls", "http://etcd.default.svc.cluster.local:2379",
                "--listen-peer-urls", "http://127.0.0.1:2380",
                "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
                "--initial-cluster", "lab=http://127.0.0.1:2380"],
            "ports": [{"containerPort": 2379, "name": "client"}],
            "readinessProbe": {"tcpSocket": {"port": 2379}, "periodSeconds": 1},
        }]}
    }))
    .unwrap();
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "etcd"},
        "spec": {"selector": {"app": "etcd"},
            "ports": [{"name": "client", "port": 2379, "targetPort": 2379}]}
    }))
    .unwrap();
    cluster
        .rt
        .block_on(pods.create(&PostParams::default(), &pod))
        .unwrap();
    cluster
        .rt
        .block_on(services.create(&PostParams::default(), &svc))
        .unwrap();
}

/// Every Job, Service and Pod a `kubelan run` session created, still present.
fn run_objects(cluster: &Cluster) -> Vec<String> {
    let mut v = cluster.names::<Job>(RUN_OBJECTS);
    v.extend(cluster.names::<Service>(RUN_OBJECTS));
    v.extend(cluster.names::<Pod>(RUN_OBJECTS));
    v
}

/// The program's PID, from kubelan's `started ... (pid N)` line.
fn program_pid(log: &str) -> u32 {
    log.split("(pid ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no program PID in {log}"))
}

/// Whether process `pid` is gone (or a zombie nobody reaped yet).
fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}

#[test]
fn run_registers_the_cluster_address_in_etcd_and_pods_call_the_laptop() {
    if !lab_available() {
        return;
    }
    let root_before = root_snapshot();
    let lab = Lab::up("rn", &[]);
    let cluster = Cluster::new(&lab);
    lab.exec_ok("laptop", &["kubelan", "install"]);
    start_etcd(&cluster);
    let web = format!("pod/{}", pods_of(&cluster, "app=web")[0].0);
    let etcdctl = |args: &[&str]| {
        let mut argv = vec!["etcdctl", "--endpoints", "http://etcd:2379"];
        argv.extend_from_slice(args);
        lab.exec(&web, &argv)
    };
    wait_for("etcd to answer pods", 60, || {
        etcdctl(&["endpoint", "health"])
            .status
            .success()
            .then_some(())
    });

    // The program's files: a page with a marker, and the script `kubelan run` starts.
    let work = TempDir::new("run");
    let dir = work.to_string();
    std::fs::create_dir_all(work.join("www")).unwrap();
    let marker = format!("served by the laptop of {}", lab.name);
    std::fs::write(work.join("www/hello"), &marker).unwrap();
    std::fs::write(
        work.join("app.sh"),
        format!(
            "env > {dir}/env\n\
             etcdctl --endpoints http://etcd.default.svc.cluster.local:2379 \
             put /services/laptop-app \"$KUBELAN_CLUSTER_IP:8080\" || exit 3\n\
             exec python3 -m http.server 8080 --bind 127.0.0.1 --directory {dir}/www\n"
        ),
    )
    .unwrap();

    // The laptop reaches etcd by name through `kubelan connect`.
    let connect = Background::start(&lab, "laptop", "connect", 600, "kubelan connect");
    connect.wait_log("✓ connected via", 30);
    let mut run = Background::start(
        &lab,
        "laptop",
        "run",
        300,
        &format!("kubelan run --expose 8080 --name laptop-app -- sh {dir}/app.sh"),
    );
    let took = run.wait_log("kubelan: started", 90);
    eprintln!("the program started {took:?} after kubelan run");

    // A pod finds the laptop's address in etcd and calls it.
    let cluster_ip = cluster.svc_ip("laptop-app");
    let registered = wait_for("the laptop's key in etcd", 30, || {
        let out = etcdctl(&["get", "--print-value-only", "/services/laptop-app"]);
        let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (!v.is_empty()).then_some(v)
    });
    assert_eq!(registered, format!("{cluster_ip}:8080"));
    let url = format!("http://{registered}/hello");
    let body = wait_for("the laptop to answer the pod", 20, || {
        let out = lab.exec(&web, &["curl", "-sS", "-m", "5", &url]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    assert_eq!(body, marker);
    let by_name = lab.exec_ok(
        &web,
        &[
            "curl",
            "-sS",
            "-m",
            "5",
            "http://laptop-app.default.svc.cluster.local:8080/hello",
        ],
    );
    assert_eq!(by_name, marker);

    // The registries' settings, as the program saw them.
    let env = std::fs::read_to_string(work.join("env")).unwrap();
    for (k, v) in [
        ("KUBELAN_CLUSTER_IP", cluster_ip.as_str()),
        (
            "KUBELAN_CLUSTER_HOST",
            "laptop-app.default.svc.cluster.local",
        ),
        ("KUBELAN_CLUSTER_PORT", "8080"),
        ("SPRING_CLOUD_NACOS_DISCOVERY_IP", cluster_ip.as_str()),
        ("SPRING_CLOUD_NACOS_DISCOVERY_PORT", "8080"),
        ("EUREKA_INSTANCE_IP_ADDRESS", cluster_ip.as_str()),
        ("EUREKA_INSTANCE_NON_SECURE_PORT", "8080"),
        (
            "SPRING_CLOUD_CONSUL_DISCOVERY_IP_ADDRESS",
            cluster_ip.as_str(),
        ),
        ("DUBBO_IP_TO_REGISTRY", cluster_ip.as_str()),
        ("DUBBO_PORT_TO_REGISTRY", "8080"),
    ] {
        assert!(
            env.lines().any(|l| l == format!("{k}={v}")),
            "{k}={v} missing from the program's environment:\n{env}"
        );
    }

    // SIGTERM to kubelan reaches the program; kubelan exits with its status (143: ended
    // by SIGTERM) after ending the session.
    let kubelan_pid = run.command_pid();
    Command::new("kill")
        .args(["-TERM", &kubelan_pid.to_string()])
        .status()
        .unwrap();
    let status = run.wait_exit(30);
    assert_eq!(status.code(), Some(143), "{}", run.log());
    assert!(run.log().contains("SIGTERM: passed on to the program"));
    assert!(run.log().contains("the program exited with status 143"));
    assert!(run.log().contains("session ended: deleted job kubelan-"));
    wait_for("the session's objects to go", 30, || {
        run_objects(&cluster).is_empty().then_some(())
    });

    // Without --expose: the port the program opens (a second after it starts) is added
    // to the Service as it appears, and pods reach it.
    let mut auto = Background::start(
        &lab,
        "laptop",
        "auto",
        300,
        &format!(
            "kubelan run --name auto -- sh -c 'sleep 1; exec python3 -m http.server 8090 --bind 127.0.0.1 --directory {dir}/www'"
        ),
    );
    let took = auto.wait_log("kubelan: exposed 127.0.0.1:8090 as port 8090", 90);
    eprintln!("port 8090 exposed {took:?} after kubelan run");
    let ports: Vec<i32> = cluster
        .service("default", "auto")
        .spec
        .and_then(|s| s.ports)
        .unwrap_or_default()
        .iter()
        .map(|p| p.port)
        .collect();
    assert!(ports.contains(&8090), "{ports:?}");
    let body = wait_for("the laptop's new port to answer the pod", 20, || {
        let out = lab.exec(
            &web,
            &[
                "curl",
                "-sS",
                "-m",
                "5",
                "http://auto.default.svc.cluster.local:8090/hello",
            ],
        );
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    assert_eq!(body, marker);
    Command::new("kill")
        .args(["-TERM", &auto.command_pid().to_string()])
        .status()
        .unwrap();
    assert_eq!(auto.wait_exit(30).code(), Some(143), "{}", auto.log());
    wait_for("the automatic session's objects to go", 30, || {
        run_objects(&cluster).is_empty().then_some(())
    });

    // The program's own exit ends the session with its status.
    let out = lab.exec(
        "laptop",
        &[
            "timeout", "120", "kubelan", "run", "--expose", "8081", "--", "sh", "-c", "exit 7",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{stderr}");
    assert!(stderr.contains("session ended"), "{stderr}");
    wait_for("the second session's objects to go", 30, || {
        run_objects(&cluster).is_empty().then_some(())
    });

    // kill -9 of kubelan: the program goes with it (PR_SET_PDEATHSIG), and Kubernetes
    // removes the session once the relay stops hearing from the client.
    let doomed = Background::start(
        &lab,
        "laptop",
        "doomed",
        300,
        "kubelan run --expose 8082 --name doomed -- sleep 300",
    );
    doomed.wait_log("kubelan: started", 90);
    let kubelan_pid = doomed.command_pid();
    let program = program_pid(&doomed.log());
    assert!(!gone(program));
    assert!(!run_objects(&cluster).is_empty());
    Command::new("kill")
        .args(["-9", &kubelan_pid.to_string()])
        .status()
        .unwrap();
    wait_for("the program to end with kubelan", 5, || {
        gone(program).then_some(())
    });
    let t = std::time::Instant::now();
    wait_for("Kubernetes to remove the killed session", 45, || {
        run_objects(&cluster).is_empty().then_some(())
    });
    eprintln!("after kill -9 the session was gone in {:?}", t.elapsed());

    drop(doomed);
    drop(connect);
    lab.down();
    assert_eq!(root_snapshot(), root_before, "root namespace changed");
}
