//! `kubelan replace svc/NAME [LOCAL:]PORT...`: arguments and exit codes; the output and the
//! link to the relay are `expose`'s ([`crate::expose::drive`]); the session itself is
//! `kubelan_expose::replace`.

use std::process::ExitCode;

use clap::Args;
use kubelan_expose::ReplaceRequest;
use tokio_util::sync::CancellationToken;

use crate::expose::{ExposeOutput, SessionArgs, drive};

/// Where a permission or API error sends the user.
const RBAC_HINT: &str = "`kubelan rbac replace` prints a ClusterRole granting what replace needs; ask an admin of the namespace to bind it to you";

/// `kubelan replace`.
#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  kubelan replace svc/web 8080:80            the Service's port 80 → this machine's 127.0.0.1:8080\n  kubelan replace svc/web 3000:http -n team  by port name, in namespace team\n  kubelan replace svc/dns 5353:53/udp        one protocol of a port number\n  kubelan replace svc/web 172.16.1.11:8080:80  to a LAN PC (on a gateway host)\n\nOn exit (Ctrl-C) the Service is put back exactly as it was; if this client dies, the\nrelay pod puts it back within about 10 s and Kubernetes removes the session."
)]
pub(crate) struct ReplaceArgs {
    /// The Service: `svc/NAME`.
    #[arg(value_name = "svc/NAME")]
    service: String,
    /// Service ports to take over: `[LOCAL:]PORT[/udp]`, PORT the Service's port number or
    /// name, LOCAL `[HOST:]PORT` on this machine (default: 127.0.0.1 and the same number).
    #[arg(value_name = "[LOCAL:]PORT", required = true)]
    ports: Vec<String>,
    #[command(flatten)]
    session: SessionArgs,
    /// Output format.
    #[arg(long, short, value_enum, default_value = "human")]
    output: ExposeOutput,
}

/// Runs `kubelan replace` until Ctrl-C or SIGTERM.
pub(crate) async fn run(args: ReplaceArgs) -> anyhow::Result<ExitCode> {
    let request = ReplaceRequest::parse(&args.service, &args.ports)?;
    let outer_stop = CancellationToken::new();
    let _stop_outer = outer_stop.clone().drop_guard();
    let (cc, options) = args
        .session
        .connect(kubelan_cluster::session_objects::Mode::Replace, outer_stop)
        .await?;
    // The table's rows follow the Service's ports, known only once it is read: rows are
    // shown per listener as connections arrive (the plain lines carry everything).
    drive(&[], args.output, &cc, RBAC_HINT, move |events, shutdown| {
        tokio::spawn(async move {
            kubelan_expose::run_replace(&request, &options, events, shutdown).await
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use kubelan_expose::replace_plan::parse_port_arg;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ReplaceArgs,
    }

    #[test]
    fn arguments_parse_into_a_request() {
        let a = Cli::try_parse_from(["x", "svc/web", "8080:80", "3000:grpc", "-n", "team"])
            .unwrap()
            .args;
        let r = ReplaceRequest::parse(&a.service, &a.ports).unwrap();
        assert_eq!(r.service, "web");
        assert_eq!(r.ports.len(), 2);
        assert_eq!(a.session.namespace.as_deref(), Some("team"));
        assert!(
            Cli::try_parse_from(["x", "svc/web"]).is_err(),
            "a port is required"
        );
        let a = Cli::try_parse_from(["x", "web", "80"]).unwrap().args;
        let e = ReplaceRequest::parse(&a.service, &a.ports).unwrap_err();
        assert!(e.to_string().contains("svc/NAME"));
    }

    /// The relay Job that replace creates runs `kubelan relay` with arguments this
    /// binary's relay accepts: listeners on the Service's target ports, the Service to
    /// restore, its selector, the session and a restore timeout below the pod's
    /// termination grace.
    #[test]
    fn the_replace_relay_job_arguments_parse_as_kubelan_relay() {
        use kubelan_cluster::replace::{ReplacedPort, TargetPort};
        use kubelan_cluster::session_objects::{
            self as so, Mode, ReplaceTarget, SessionId, SessionMeta,
        };
        let ports = [ReplacedPort {
            name: Some("http".into()),
            port: 80,
            protocol: "TCP".into(),
            target: TargetPort::Name("http".into()),
        }];
        let plan = kubelan_expose::replace_plan::plan_replace(
            "web",
            &[parse_port_arg("8080:80").unwrap()],
            &ports,
        )
        .unwrap();
        let (_, hash) = kubelan_expose::session::new_token();
        let relay = so::RelaySpec {
            image: "kubelan".into(),
            listeners: plan.listeners.clone(),
            carrier_port: plan.carrier_port,
            grace: kubelan_expose::session::GRACE,
            first_grace: kubelan_expose::session::FIRST_GRACE,
            token_sha256: hash.clone(),
            restore: Some(ReplaceTarget {
                service: "web".into(),
                original_selector: [("app".to_string(), "web".to_string())].into(),
            }),
        };
        let id = SessionId::generate();
        let meta = SessionMeta {
            id: id.clone(),
            namespace: "default".into(),
            mode: Mode::Replace,
            user: "u".into(),
            client_host: "h".into(),
            command: "c".into(),
        };
        let job = so::job(&meta, &relay);
        let pod = job.spec.unwrap().template.spec.unwrap();
        let args = pod.containers[0].args.clone().unwrap();
        let cli = crate::Cli::try_parse_from(std::iter::once("kubelan".to_string()).chain(args))
            .unwrap_or_else(|e| panic!("{e}"));
        let crate::Command::Relay(r) = cli.command else {
            panic!("not the relay command")
        };
        let target = kubelan_agent::relay::restore_target(&r, "default")
            .unwrap()
            .unwrap();
        assert_eq!(target.service, "web");
        assert_eq!(target.session, id.to_string());
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
}
