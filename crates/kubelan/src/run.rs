//! `kubelan run`: arguments, kubelan's own lines (on stderr, so that the program's
//! stdout stays its own) and the exit code (the program's). The session is
//! `kubelan_expose::run`.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{ArgAction, Args};
use kubelan_cluster::session_objects::Mode;
use kubelan_expose::run::RunEvent;
use kubelan_expose::{ExposeEvent, RunOptions};
use tokio::sync::mpsc;

/// `kubelan run`.
#[derive(Args, Debug)]
#[command(
    after_help = "Without --expose, every TCP port the program starts listening on is added to the Service as it appears.\n\nThe program gets the Service's cluster address in KUBELAN_CLUSTER_IP, KUBELAN_CLUSTER_HOST, KUBELAN_CLUSTER_PORT, SPRING_CLOUD_NACOS_DISCOVERY_IP/_PORT, EUREKA_INSTANCE_IP_ADDRESS, EUREKA_INSTANCE_NON_SECURE_PORT, SPRING_CLOUD_CONSUL_DISCOVERY_IP_ADDRESS, DUBBO_IP_TO_REGISTRY and DUBBO_PORT_TO_REGISTRY. It reaches the cluster through `kubelan connect` (run it first, in another terminal).\n\nExamples:\n  kubelan run --expose 8080 --name orders -- java -jar orders.jar\n  kubelan run --name orders -- java -jar orders.jar       its ports as it opens them\n  kubelan run --expose 8080 -- sh -c 'etcdctl put /services/app \"$KUBELAN_CLUSTER_IP:8080\"; exec ./app'"
)]
pub(crate) struct RunArgs {
    /// A local port the program listens on, `[HOST:]PORT[/udp]`, to expose under the
    /// session's Service (repeat for several; the first is the one registries get)
    /// [default: every TCP port the program listens on, as it opens them].
    #[arg(long = "expose", value_name = "[HOST:]PORT[/udp]", action = ArgAction::Append)]
    expose: Vec<String>,
    /// The Service port of an --expose (repeat: the i-th --port is the i-th --expose's)
    /// [default: the local port].
    #[arg(long = "port", value_name = "SVCPORT", action = ArgAction::Append)]
    ports: Vec<String>,
    /// The Service's name [default: kubelan-<session id>].
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    #[command(flatten)]
    pub(crate) session: crate::expose::SessionArgs,
    /// The cluster's DNS domain, for KUBELAN_CLUSTER_HOST.
    #[arg(long, value_name = "DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// Print every connection pods make to the program.
    #[arg(long)]
    show_connections: bool,
    /// The program and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    program: Vec<OsString>,
}

/// Whether an event gets a line: connections only when they fail (every one with
/// `--show-connections`), the link only when it is down.
fn shown(e: &RunEvent, show_connections: bool) -> bool {
    match e {
        RunEvent::Session(ExposeEvent::ConnectionOpened { .. })
        | RunEvent::Session(ExposeEvent::Carrier { up: true, .. }) => false,
        RunEvent::Session(ExposeEvent::ConnectionClosed { error, .. }) => {
            show_connections || error.is_some()
        }
        _ => true,
    }
}

/// Runs `kubelan run`; the exit code is the program's.
pub(crate) async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let plan = kubelan_expose::spec::plan_for_run(&args.expose, &args.ports, args.name.as_deref())?;
    let outer_stop = tokio_util::sync::CancellationToken::new();
    let _stop_outer = outer_stop.clone().drop_guard();
    let (cc, session) = args.session.connect(Mode::Run, outer_stop).await?;
    let options = RunOptions {
        session,
        cluster_domain: args.cluster_domain.clone(),
        program: args.program.clone(),
    };
    let (events, mut rx) = mpsc::unbounded_channel();
    let session =
        tokio::spawn(async move { kubelan_expose::run::run(&plan, &options, events).await });
    tokio::pin!(session);
    let show = args.show_connections;
    let result = loop {
        tokio::select! {
            Some(e) = rx.recv() => if shown(&e, show) { eprintln!("kubelan: {e}") },
            r = &mut session => break r,
        }
    };
    while let Ok(e) = rx.try_recv() {
        if shown(&e, show) {
            eprintln!("kubelan: {e}");
        }
    }
    match result {
        Ok(Ok(code)) => Ok(ExitCode::from(code)),
        Ok(Err(e)) => Err(e.explain(&cc).into()),
        Err(e) => Err(anyhow::anyhow!("internal error: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: RunArgs,
    }

    #[test]
    fn the_program_follows_the_double_dash() {
        let a = Cli::try_parse_from([
            "x",
            "--expose",
            "8080",
            "--expose",
            "9090",
            "--name",
            "app",
            "--",
            "sh",
            "-c",
            "echo --expose",
        ])
        .unwrap()
        .args;
        assert_eq!(a.expose, ["8080", "9090"]);
        assert_eq!(a.program, ["sh", "-c", "echo --expose"]);
        let p = kubelan_expose::plan(&a.expose, &a.ports, a.name.as_deref()).unwrap();
        assert_eq!(p.ports.len(), 2);
        assert!(
            Cli::try_parse_from(["x", "--expose", "8080"]).is_err(),
            "a program is required"
        );
        let a = Cli::try_parse_from(["x", "--", "true"]).unwrap().args;
        assert!(
            a.expose.is_empty(),
            "without --expose: ports as they appear"
        );
    }

    /// Which events get a line, quiet and with `--show-connections` (the lines are
    /// `kubelan-expose`'s golden file).
    #[test]
    fn connections_show_when_they_fail_or_when_asked() {
        let closed = |error: Option<&str>| {
            RunEvent::Session(ExposeEvent::ConnectionClosed {
                listener: 0,
                peer: "172.17.32.5:4000".into(),
                to_local: 1,
                from_local: 2,
                error: error.map(str::to_string),
            })
        };
        let opened = RunEvent::Session(ExposeEvent::ConnectionOpened {
            listener: 0,
            peer: "172.17.32.5:4000".into(),
            local: "127.0.0.1:8080".into(),
        });
        let link = |up| {
            RunEvent::Session(ExposeEvent::Carrier {
                up,
                state: String::new(),
            })
        };
        let exited = RunEvent::Exited { code: 3 };
        let quiet = [&opened, &closed(None), &link(true)];
        for (e, all) in quiet.iter().zip([false, true, false]) {
            assert!(!shown(e, false), "{e}");
            assert_eq!(shown(e, true), all, "{e}");
        }
        for e in [closed(Some("refused")), link(false), exited] {
            assert!(shown(&e, false) && shown(&e, true), "{e}");
        }
    }
}
