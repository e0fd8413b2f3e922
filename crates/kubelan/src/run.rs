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
    session: crate::expose::SessionArgs,
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

/// kubelan's line for an event, or `None` for what is not worth a line.
fn line(e: &RunEvent, show_connections: bool) -> Option<String> {
    Some(match e {
        RunEvent::Session(ExposeEvent::ConnectionOpened { .. }) => return None,
        RunEvent::Session(ExposeEvent::ConnectionClosed {
            listener,
            peer,
            to_local,
            from_local,
            error,
        }) => {
            if !show_connections && error.is_none() {
                return None;
            }
            let how = error
                .as_deref()
                .map_or_else(String::new, |e| format!(" ({e})"));
            format!("#{listener} {peer}: {to_local} in, {from_local} out{how}")
        }
        RunEvent::Session(ExposeEvent::Stopping { job }) => {
            format!(
                "session ended: deleted job {job}; Kubernetes removes the Service and the relay"
            )
        }
        RunEvent::Session(ExposeEvent::Serving { service, ports }) if ports.is_empty() => {
            format!("serving {service}: the program's ports are added as it opens them")
        }
        RunEvent::Session(ExposeEvent::Serving { service, ports }) => {
            format!("serving {service}: {}", ports.join(", "))
        }
        RunEvent::Session(ExposeEvent::Carrier { up: true, .. }) => return None,
        // The rest reads as in `kubelan expose`.
        RunEvent::Session(e) => crate::expose::line(e),
        RunEvent::Started { pid, program, env } => {
            let get = |k: &str| {
                env.iter()
                    .find(|(n, _)| n == k)
                    .map_or("", |(_, v)| v.as_str())
            };
            format!(
                "started {program} (pid {pid}) as {} = {}",
                get("KUBELAN_CLUSTER_HOST"),
                get("KUBELAN_CLUSTER_IP")
            )
        }
        RunEvent::Signal { signal, forwarded } => {
            if *forwarded {
                format!("{signal}: passed on to the program")
            } else {
                format!("{signal}: stopping")
            }
        }
        RunEvent::PortExposed {
            local,
            service_port,
        } => format!("exposed {local} as port {service_port} of the Service"),
        RunEvent::PortFailed { local, error } => format!("not exposing {local}: {error}"),
        RunEvent::Exited { code } => format!("the program exited with status {code}"),
    })
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
            Some(e) = rx.recv() => if let Some(l) = line(&e, show) { eprintln!("kubelan: {l}") },
            r = &mut session => break r,
        }
    };
    while let Ok(e) = rx.try_recv() {
        if let Some(l) = line(&e, show) {
            eprintln!("kubelan: {l}");
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
    use kubelan_expose::run::Sig;

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

    /// Every event's line, quiet and with `--show-connections` (in `tests/render/run.txt`).
    #[test]
    fn every_event_renders_as_its_golden_lines() {
        let events = crate::expose::tests::samples()
            .into_iter()
            .map(RunEvent::Session)
            .chain([
                RunEvent::Started {
                    pid: 4242,
                    program: "java -jar orders.jar".into(),
                    env: vec![
                        ("KUBELAN_CLUSTER_IP".into(), "172.17.16.77".into()),
                        (
                            "KUBELAN_CLUSTER_HOST".into(),
                            "orders.team.svc.cluster.local".into(),
                        ),
                    ],
                },
                RunEvent::Signal {
                    signal: Sig::Int,
                    forwarded: true,
                },
                RunEvent::Signal {
                    signal: Sig::Term,
                    forwarded: false,
                },
                RunEvent::PortExposed {
                    local: "127.0.0.1:8080".into(),
                    service_port: 8080,
                },
                RunEvent::PortFailed {
                    local: "127.0.0.1:9090".into(),
                    error: "port in use".into(),
                },
                RunEvent::Exited { code: 3 },
            ]);
        let shown = |l: Option<String>| l.unwrap_or_else(|| "(no line)".into());
        let text: String = events
            .map(|e| match (line(&e, false), line(&e, true)) {
                (quiet, all) if quiet == all => format!("{}\n", shown(quiet)),
                (quiet, all) => format!("{} | --show-connections: {}\n", shown(quiet), shown(all)),
            })
            .collect();
        crate::tests::golden("run.txt", &text);
    }
}
