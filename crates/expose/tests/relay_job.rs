//! The relay Jobs that `expose` and `replace` create run `kubelan relay` with arguments
//! the agent's relay accepts: the same listeners, carrier port, grace periods and token
//! hash, and for `replace` the Service to restore. (`kubelan relay --help` is pinned by
//! the binary's help goldens, so the subcommand's name is checked there.)

use clap::Parser;
use kubelan_agent::relay::RelayArgs;
use kubelan_cluster::replace::{ReplacedPort, TargetPort};
use kubelan_cluster::session_objects::{
    self as so, Mode, RelaySpec, ReplaceTarget, SessionId, SessionMeta,
};
use kubelan_expose::replace_plan::{parse_port_arg, plan_replace};
use kubelan_expose::session::{FIRST_GRACE, GRACE, new_token};

/// The binary's command line, as far as the relay goes.
#[derive(Parser)]
enum Cli {
    Relay(RelayArgs),
}

fn meta(mode: Mode) -> SessionMeta {
    SessionMeta {
        id: SessionId::generate(),
        namespace: "default".into(),
        mode,
        user: "u".into(),
        client_host: "h".into(),
        command: "c".into(),
    }
}

/// The Job's pod spec and its container's arguments parsed as `kubelan relay`.
fn relay_of(
    meta: &SessionMeta,
    relay: &RelaySpec,
) -> (k8s_openapi::api::core::v1::PodSpec, RelayArgs) {
    let pod = so::job(meta, relay).spec.unwrap().template.spec.unwrap();
    let args = pod.containers[0].args.clone().unwrap();
    let Cli::Relay(r) = Cli::try_parse_from(std::iter::once("kubelan".to_string()).chain(args))
        .unwrap_or_else(|e| panic!("{e}"));
    (pod, r)
}

#[test]
fn the_expose_relay_job_arguments_parse_as_kubelan_relay() {
    let plan = kubelan_expose::plan(&["8080".into(), "53/udp".into()], &[], None).unwrap();
    let (_, hash) = new_token();
    let relay = RelaySpec {
        image: "kubelan".into(),
        listeners: plan.ports.iter().map(|p| p.listener()).collect(),
        carrier_port: plan.carrier_port,
        grace: GRACE,
        first_grace: FIRST_GRACE,
        token_sha256: hash.clone(),
        restore: None,
    };
    let (_, r) = relay_of(&meta(Mode::Expose), &relay);
    assert_eq!(r.carrier_port, plan.carrier_port);
    assert_eq!((r.grace, r.first_grace), (10, 60));
    assert_eq!(r.token_sha256, hash);
    let listen: Vec<_> = r.listen.iter().map(|l| (l.port, l.listener)).collect();
    assert_eq!(listen, [(8080, 0), (20053, 1)]);
    assert_eq!(r.listen[1].kind, kubelan_proto::FlowKind::Udp);
}

/// For `replace`: listeners on the Service's target ports, the Service to restore, its
/// selector, the session and a restore timeout below the pod's termination grace.
#[test]
fn the_replace_relay_job_arguments_parse_as_kubelan_relay() {
    let ports = [ReplacedPort {
        name: Some("http".into()),
        port: 80,
        protocol: "TCP".into(),
        target: TargetPort::Name("http".into()),
    }];
    let plan = plan_replace("web", &[parse_port_arg("8080:80").unwrap()], &ports).unwrap();
    let (_, hash) = new_token();
    let relay = RelaySpec {
        image: "kubelan".into(),
        listeners: plan.listeners.clone(),
        carrier_port: plan.carrier_port,
        grace: GRACE,
        first_grace: FIRST_GRACE,
        token_sha256: hash,
        restore: Some(ReplaceTarget {
            service: "web".into(),
            original_selector: [("app".to_string(), "web".to_string())].into(),
        }),
    };
    let meta = meta(Mode::Replace);
    let (pod, r) = relay_of(&meta, &relay);
    let target = kubelan_agent::relay::restore_target(&r, "default")
        .unwrap()
        .unwrap();
    assert_eq!(target.service, "web");
    assert_eq!(target.session, meta.id.to_string());
    assert_eq!(
        target.original,
        Some([("app".to_string(), "web".to_string())].into())
    );
    assert!(target.timeout.as_secs() < pod.termination_grace_period_seconds.unwrap() as u64);
    let listen: Vec<_> = r.listen.iter().map(|l| (l.port, l.listener)).collect();
    assert_eq!(listen, [(20000, 0)]);
    // The container declares the Service's named targetPort on that port.
    let declared: Vec<_> = pod.containers[0]
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap_or_default(), p.container_port))
        .collect();
    assert!(declared.contains(&("http".into(), 20000)), "{declared:?}");
}
