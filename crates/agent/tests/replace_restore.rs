//! `kubelan replace`'s crash safety, relay side, against the in-process API simulator
//! (TLS, tokens, RBAC enforced): the relay, holding only the session's ServiceAccount
//! (`get`, `patch` on the one Service), puts a swapped Service back whenever it stops —
//! its client gone past the grace period, or SIGTERM — and leaves a Service someone else
//! changed alone. The Service after swap and restore is the Service before, byte for
//! byte, but for `resourceVersion`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Parser;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use kubelan_agent::relay::{
    Relay, RelayArgs, RelayConfig, RelayExit, RestoreOutcome, RestoreTarget, Restorer,
    restore_target, serve, token_sha256_hex,
};
use kubelan_apisim::resources::find;
use kubelan_apisim::testing::{TestCluster, TestClusterOptions};
use kubelan_cluster::replace::{self, Replacer, RestoreDecision, Selector};
use kubelan_proto::{Capabilities, ErrorKind, FlowError, FlowKind, Target, Token};
use kubelan_session::carrier::{CarrierDialer, CarrierError, CarrierKind, Dialed};
use kubelan_session::{Acceptor, Session, SessionConfig};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const NS: &str = "default";
const SESSION: &str = "b7x2kq9d";
const SA: &str = "kubelan-b7x2kq9d";
const WAIT: Duration = Duration::from_secs(10);

struct Sim {
    cluster: TestCluster,
    admin: kube::Client,
    /// The relay's client: the session's ServiceAccount.
    relay: kube::Client,
}

fn typed<T: k8s_openapi::serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

/// A cluster with Service `web` (and `db`), and the session's ServiceAccount allowed
/// `get` and `patch` on `web` only (without the RoleBinding when `bind` is false).
async fn start(bind: bool) -> Sim {
    let cluster = TestCluster::start(TestClusterOptions::default()).await;
    let admin = cluster.client(&cluster.admin_token).await;
    let svcs: Api<Service> = Api::namespaced(admin.clone(), NS);
    for (name, annotations) in [("web", Some(json!({"team": "payments"}))), ("db", None)] {
        let mut svc = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {
                "selector": {"app": name, "tier": "front"},
                "ports": [
                    {"name": "http", "port": 80, "targetPort": 8080},
                    {"name": "metrics", "port": 9090, "targetPort": "metrics"},
                ],
            },
        });
        if let Some(a) = annotations {
            svc["metadata"]["annotations"] = a;
        }
        svcs.create(&PostParams::default(), &typed(svc))
            .await
            .unwrap();
    }
    Api::<ServiceAccount>::namespaced(admin.clone(), NS)
        .create(
            &PostParams::default(),
            &typed(json!({"metadata": {"name": SA}})),
        )
        .await
        .unwrap();
    Api::<Role>::namespaced(admin.clone(), NS)
        .create(
            &PostParams::default(),
            &typed(json!({
                "metadata": {"name": SA},
                "rules": [{"apiGroups": [""], "resources": ["services"],
                           "resourceNames": ["web"], "verbs": ["get", "patch"]}],
            })),
        )
        .await
        .unwrap();
    if bind {
        bind_role(&admin).await;
    }
    let token = cluster.auth.mint_service_account_token(NS, SA, None);
    let relay = cluster.client(&token).await;
    Sim {
        cluster,
        admin,
        relay,
    }
}

async fn bind_role(admin: &kube::Client) {
    Api::<RoleBinding>::namespaced(admin.clone(), NS)
        .create(
            &PostParams::default(),
            &typed(json!({
                "metadata": {"name": SA},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": SA},
                "subjects": [{"kind": "ServiceAccount", "name": SA, "namespace": NS}],
            })),
        )
        .await
        .unwrap();
}

impl Sim {
    /// The Service as stored, without `resourceVersion` and `managedFields`.
    fn stored(&self, name: &str) -> Value {
        let res = find("", "v1", "services").unwrap();
        let mut v = self.cluster.store.get(res, NS, name).unwrap();
        let m = v["metadata"].as_object_mut().unwrap();
        m.remove("resourceVersion");
        m.remove("managedFields");
        v
    }

    fn services(&self) -> Api<Service> {
        Api::namespaced(self.admin.clone(), NS)
    }

    /// What the client does: read, decide, patch. Returns the original selector.
    async fn swap(&self, name: &str) -> Selector {
        let svc = self.services().get(name).await.unwrap();
        let who = Replacer {
            session: SESSION.into(),
            user: "jane".into(),
            host: "laptop-3".into(),
        };
        let s = replace::swap(&svc, &who).unwrap();
        let patch: json_patch::Patch = serde_json::from_value(s.patch).unwrap();
        self.services()
            .patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
            .await
            .unwrap();
        s.original
    }

    fn restorer(&self, service: &str, original: Option<Selector>) -> Restorer {
        Restorer::new(
            self.relay.clone(),
            RestoreTarget {
                namespace: NS.into(),
                service: service.into(),
                session: SESSION.into(),
                original,
                timeout: Duration::from_secs(5),
            },
        )
    }
}

fn relay_config(secret: &str) -> RelayConfig {
    let mut c = RelayConfig::new(hash(secret));
    c.listeners = vec!["0=1".parse().unwrap()];
    c
}

fn hash(secret: &str) -> [u8; 32] {
    let hex = token_sha256_hex(secret);
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

/// A carrier straight to the relay's carrier port.
struct Plain(SocketAddr);

impl CarrierDialer for Plain {
    fn dial(&self) -> futures::future::BoxFuture<'_, Result<Dialed, CarrierError>> {
        Box::pin(async move {
            let tcp = TcpStream::connect(self.0)
                .await
                .map_err(|e| CarrierError::retry(format!("{}: {e}", self.0)))?;
            Ok(Dialed {
                io: Box::new(tcp),
                kind: CarrierKind::Direct,
                peer: self.0.to_string(),
                keepalive: None,
            })
        })
    }
}

struct Nothing;

impl Acceptor for Nothing {
    fn target(&self, _: u32, _: FlowKind, _: SocketAddr) -> Result<Target, FlowError> {
        Err(FlowError::new(ErrorKind::Policy, "not exposed"))
    }
}

/// The client connects, swaps the Service, then vanishes (like `kill -9`: its carrier
/// closes); after the grace period the relay restores the Service and stops.
#[tokio::test]
async fn the_relay_restores_the_service_after_its_client_is_gone() {
    let sim = start(true).await;
    let before = sim.stored("web");
    let restorer = sim.restorer("web", None);
    restorer.check().await.unwrap();

    let mut cfg = relay_config("s3cret");
    cfg.grace = Duration::from_millis(800);
    let relay = Relay::bind(cfg).await.unwrap();
    let (carrier, stats) = (relay.carrier_addr(), relay.stats());
    let running = {
        let restorer = restorer.clone();
        tokio::spawn(async move { serve(relay, CancellationToken::new(), Some(&restorer)).await })
    };
    let client_stop = CancellationToken::new();
    let session = Session::start_accepting(
        vec![Arc::new(Plain(carrier))],
        SessionConfig {
            token: Some(Token::new("s3cret")),
            required: Capabilities::REVERSE,
            ..SessionConfig::default()
        },
        Some(Arc::new(Nothing)),
        client_stop.clone(),
    );
    session.wait_connected(WAIT).await.unwrap();
    assert_eq!(stats.carriers.load(Ordering::Relaxed), 1);
    let original = sim.swap("web").await;
    let swapped = sim.stored("web");
    assert_eq!(
        swapped["spec"]["selector"],
        json!({"kubelan.io/session": SESSION})
    );
    assert_ne!(swapped, before);

    // The client goes away.
    client_stop.cancel();
    drop(session);
    let t0 = Instant::now();
    let (exit, restored) = tokio::time::timeout(WAIT, running).await.unwrap().unwrap();
    let took = t0.elapsed();
    eprintln!("client gone -> Service restored in {took:?} (grace 800 ms)");
    assert_eq!(exit, RelayExit::Expired);
    assert_eq!(
        restored,
        Some(RestoreOutcome::Done(RestoreDecision::Restore { original }))
    );
    assert!(took >= Duration::from_millis(700), "{took:?}");
    assert_eq!(
        sim.stored("web"),
        before,
        "byte-identical but resourceVersion"
    );
}

/// SIGTERM (the Job deleted) while the client is still there: restored before exiting;
/// a second restore (the client's own, on Ctrl-C) finds nothing to do.
#[tokio::test]
async fn the_relay_restores_the_service_when_it_is_stopped() {
    let sim = start(true).await;
    let before = sim.stored("web");
    let original = sim.swap("web").await;
    // With the selector from the Job's arguments, as `kubelan replace` passes it.
    let restorer = sim.restorer("web", Some(original.clone()));
    let mut cfg = relay_config("s3cret");
    cfg.first_grace = Duration::from_secs(60);
    let relay = Relay::bind(cfg).await.unwrap();
    let stop = CancellationToken::new();
    let running = {
        let (restorer, stop) = (restorer.clone(), stop.clone());
        tokio::spawn(async move { serve(relay, stop, Some(&restorer)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    stop.cancel();
    let (exit, restored) = tokio::time::timeout(WAIT, running).await.unwrap().unwrap();
    eprintln!("SIGTERM -> Service restored in {:?}", t0.elapsed());
    assert_eq!(exit, RelayExit::Stopped);
    assert_eq!(
        restored,
        Some(RestoreOutcome::Done(RestoreDecision::Restore { original }))
    );
    assert_eq!(sim.stored("web"), before);
    assert_eq!(
        restorer.restore().await,
        RestoreOutcome::Done(RestoreDecision::AlreadyRestored)
    );
    assert_eq!(sim.stored("web"), before);
}

/// Someone points the Service elsewhere during the session: the relay leaves their
/// selector in place and removes only its own annotations.
#[tokio::test]
async fn a_service_changed_by_someone_else_is_not_clobbered() {
    let sim = start(true).await;
    let before = sim.stored("web");
    sim.swap("web").await;
    let theirs: json_patch::Patch = serde_json::from_value(json!([
        {"op": "replace", "path": "/spec/selector", "value": {"app": "web-v2"}},
    ]))
    .unwrap();
    sim.services()
        .patch("web", &PatchParams::default(), &Patch::Json::<()>(theirs))
        .await
        .unwrap();

    let outcome = sim.restorer("web", None).restore().await;
    assert_eq!(
        outcome,
        RestoreOutcome::Done(RestoreDecision::ChangedByOthers {
            selector: Some(Selector::from([("app".into(), "web-v2".into())]))
        })
    );
    let after = sim.stored("web");
    assert_eq!(after["spec"]["selector"], json!({"app": "web-v2"}));
    assert_eq!(
        after["metadata"]["annotations"],
        before["metadata"]["annotations"]
    );
}

/// The relay's account may touch `web` only; the readiness check waits for the
/// RoleBinding; a Service that is gone is nothing to restore.
#[tokio::test]
async fn the_relay_may_restore_only_its_service_and_waits_for_its_rbac() {
    let sim = start(false).await;
    let web = sim.restorer("web", None);
    let e = web.check().await.unwrap_err();
    assert!(e.contains("403"), "{e}");
    assert!(e.contains("get and patch"), "{e}");
    let stop = CancellationToken::new();
    let waiting = {
        let (web, stop) = (web.clone(), stop.clone());
        tokio::spawn(async move { web.wait_until_able(Duration::from_secs(8), &stop).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished());
    bind_role(&sim.admin).await;
    tokio::time::timeout(WAIT, waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    let db = sim.restorer("db", None);
    let e = db.check().await.unwrap_err();
    assert!(e.contains("403"), "{e}");
    // Restoring without permission gives up within the timeout, and says so.
    let mut target = db.target().clone();
    target.timeout = Duration::from_millis(600);
    let t0 = Instant::now();
    let outcome = Restorer::new(sim.relay.clone(), target).restore().await;
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert!(
        matches!(&outcome, RestoreOutcome::Failed { last_error } if last_error.contains("403")),
        "{outcome:?}"
    );

    sim.services()
        .delete("web", &Default::default())
        .await
        .unwrap();
    // Deleted: the relay's account cannot tell 404 from 403 for a name it may read, but
    // it may read this one, so it learns the Service is gone.
    assert_eq!(web.restore().await, RestoreOutcome::Gone);
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    relay: RelayArgs,
}

#[test]
fn the_restore_flags_parse() {
    let parse = |extra: &[&str]| {
        let mut argv = vec!["relay", "--token-sha256", "ab"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).map(|c| c.relay)
    };
    let mut args = parse(&[
        "--restore-service",
        "web",
        "--session",
        SESSION,
        "--restore-selector",
        r#"{"app":"web"}"#,
        "--restore-timeout",
        "7",
    ])
    .unwrap();
    // The binary's global `-n` (else POD_NAMESPACE) fills it.
    args.namespace = Some("team-a".into());
    assert_eq!(
        restore_target(&args, "default").unwrap(),
        Some(RestoreTarget {
            namespace: "team-a".into(),
            service: "web".into(),
            session: SESSION.into(),
            original: Some(Selector::from([("app".into(), "web".into())])),
            timeout: Duration::from_secs(7),
        })
    );
    let plain = parse(&[]).unwrap();
    assert_eq!(restore_target(&plain, "default").unwrap(), None);
    // A service needs a session; a selector needs a service.
    assert!(parse(&["--restore-service", "web"]).is_err());
    assert!(parse(&["--restore-selector", "{}"]).is_err());
    let bad = parse(&[
        "--restore-service",
        "web",
        "--session",
        SESSION,
        "--restore-selector",
        "app=web",
    ])
    .unwrap();
    let e = restore_target(&bad, "default").unwrap_err().to_string();
    assert!(e.contains("--restore-selector"), "{e}");
}
