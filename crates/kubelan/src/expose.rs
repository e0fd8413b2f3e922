//! `kubelan expose`: arguments, the output (a live table on a terminal, plain lines
//! otherwise, JSON lines with `--output json`) and exit codes. The session itself is
//! `kubelan_expose`.

use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, Args, ValueEnum};
use kubelan_cluster::names::DEFAULT_NAMESPACE;
use kubelan_cluster::{ClusterError, KubeArgs, KubeconfigArgs};
use kubelan_expose::{
    ExposeError, ExposeEvent, ExposeOptions, SessionRequest, Table, ViaError, ViaNote,
};
use tokio::sync::mpsc;

use crate::live::{Mode as LiveMode, Screen};
use tokio_util::sync::CancellationToken;

/// Where a permission or API error sends the user.
const RBAC_HINT: &str = "`kubelan rbac expose` prints a ClusterRole granting what expose needs; ask an admin of the namespace to bind it to you";

/// Output format.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub(crate) enum ExposeOutput {
    /// A live table on a terminal, plain lines otherwise.
    Human,
    /// One JSON object per line, one per event.
    Json,
}

/// How the client reaches the session's relay pod.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub(crate) enum Via {
    /// Through the kubelan agent when it is installed (a flow of its session to the relay
    /// pod), else a port-forward to the relay pod.
    Auto,
    /// Only through the kubelan agent; refused when the agent is missing or too old.
    Agent,
    /// Only a port-forward to the relay pod through the API server (no agent needed).
    PortForward,
}

/// `kubelan expose`.
#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  kubelan expose 8080 --name dev-api              pods reach 127.0.0.1:8080 as dev-api:8080\n  kubelan expose 3000 --port 80 --name web        as web:80\n  kubelan expose 8080 53/udp -n team --name dev   two ports, one Service\n  kubelan expose 172.16.1.11:8080 --name pc1-app  a LAN PC's port (on a gateway host)\n  kubelan expose '[::1]:9000'                     IPv6 in brackets"
)]
pub(crate) struct ExposeArgs {
    /// Local targets: `[HOST:]PORT[/udp]` (HOST defaults to 127.0.0.1; IPv6 in brackets).
    #[arg(value_name = "[HOST:]PORT[/udp]", required = true)]
    targets: Vec<String>,
    /// The Service's name [default: kubelan-<session id>].
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// The Service port of a target (repeat: the i-th --port is the i-th target's)
    /// [default: the local port].
    #[arg(long = "port", value_name = "SVCPORT", action = ArgAction::Append)]
    ports: Vec<String>,
    #[command(flatten)]
    session: SessionArgs,
    /// Output format.
    #[arg(long, short, value_enum, default_value = "human")]
    output: ExposeOutput,
}

/// What the user sees: events as lines (or JSON), and on a terminal the table redrawn
/// below them.
struct Ui {
    screen: Screen,
}

impl Ui {
    fn draw(&mut self, table: &Table) {
        if self.screen.mode == LiveMode::Table {
            self.screen.draw(&table.render(Screen::width()));
        }
    }

    fn event(&mut self, e: &ExposeEvent, table: &Table) {
        match self.screen.mode {
            LiveMode::Json => self
                .screen
                .json(&serde_json::to_value(e).unwrap_or_default()),
            LiveMode::Lines => self.screen.print(&format!("{}\n", line(e))),
            LiveMode::Table => {
                // Connections show in the table, not one line each.
                if matches!(
                    e,
                    ExposeEvent::ConnectionOpened { .. }
                        | ExposeEvent::ConnectionClosed { error: None, .. }
                ) {
                    return;
                }
                self.screen.print(&format!("{}\n", line(e)));
                self.draw(table);
            }
        }
    }
}

/// One line per event, for people.
pub(crate) fn line(e: &ExposeEvent) -> String {
    match e {
        ExposeEvent::Preflight { namespace } => {
            format!("checking permissions in namespace {namespace}")
        }
        ExposeEvent::Created { kind, name } => format!("created {kind} {name}"),
        ExposeEvent::Waiting { status } => format!("waiting for the relay: {status}"),
        ExposeEvent::RelayReady { pod, ip } => format!("relay {pod} ready at {ip}"),
        ExposeEvent::Serving { service, ports } => {
            format!("serving {service}: {}", ports.join(", "))
        }
        ExposeEvent::Carrier { state, .. } => format!("link: {state}"),
        ExposeEvent::ConnectionOpened {
            listener,
            peer,
            local,
        } => format!("#{listener} {peer} → {local}"),
        ExposeEvent::ConnectionClosed {
            listener,
            peer,
            to_local,
            from_local,
            error,
        } => {
            let how = error
                .as_deref()
                .map_or_else(String::new, |e| format!(" ({e})"));
            format!("#{listener} {peer} closed: {to_local} in, {from_local} out{how}")
        }
        ExposeEvent::Stopping { job } => {
            format!(
                "stopping: deleted job {job}; Kubernetes removes the relay and the session's objects"
            )
        }
        ExposeEvent::Warning { message } => format!("warning: {message}"),
        ExposeEvent::Replaced { service, original } => format!(
            "replaced: Service {service} now sends its traffic here (its selector {original} comes back at exit)"
        ),
        ExposeEvent::Restored { outcome, .. } => format!("restored: {outcome}"),
    }
}

/// Runs `kubelan expose` until Ctrl-C or SIGTERM.
pub(crate) async fn run(args: ExposeArgs) -> anyhow::Result<ExitCode> {
    let plan = kubelan_expose::plan(&args.targets, &args.ports, args.name.as_deref())?;
    let outer_stop = CancellationToken::new();
    let _stop_outer = outer_stop.clone().drop_guard();
    let (cc, options) = args
        .session
        .connect(kubelan_cluster::session_objects::Mode::Expose, outer_stop)
        .await?;
    let ports = plan.ports.clone();
    drive(
        &ports,
        args.output,
        &cc,
        RBAC_HINT,
        move |events, shutdown| {
            tokio::spawn(
                async move { kubelan_expose::run(&plan, &options, events, shutdown).await },
            )
        },
    )
    .await
}

/// Renders a session's events (table, lines or JSON) until it ends; Ctrl-C or SIGTERM
/// asks it to stop. `start` spawns the session with its events sender and shutdown token.
/// Shared by `expose` and `replace`.
pub(crate) async fn drive<F>(
    ports: &[kubelan_expose::spec::ExposedPort],
    output: ExposeOutput,
    cc: &kubelan_cluster::ClusterClient,
    hint: &str,
    start: F,
) -> anyhow::Result<ExitCode>
where
    F: FnOnce(
        mpsc::UnboundedSender<ExposeEvent>,
        CancellationToken,
    ) -> tokio::task::JoinHandle<Result<(), ExposeError>>,
{
    let mut ui = Ui {
        screen: Screen::new(output == ExposeOutput::Json),
    };
    let mut table = Table::new(ports);
    let (events, mut rx) = mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    let session = start(events, shutdown.clone());
    tokio::pin!(session);
    let signal = kubelan_sys::process::shutdown_signal();
    tokio::pin!(signal);
    let mut redraw = tokio::time::interval(Duration::from_secs(1));
    let result = loop {
        tokio::select! {
            () = &mut signal, if !shutdown.is_cancelled() => shutdown.cancel(),
            Some(e) = rx.recv() => {
                table.apply(&e);
                ui.event(&e, &table);
            }
            r = &mut session => break r,
            _ = redraw.tick() => ui.draw(&table),
        }
    };
    // Events sent just before the session ended.
    while let Ok(e) = rx.try_recv() {
        table.apply(&e);
        ui.event(&e, &table);
    }
    match result {
        Ok(Ok(())) => Ok(ExitCode::SUCCESS),
        Ok(Err(e)) => Err(explain(e, cc, hint)),
        Err(e) => Err(anyhow::anyhow!("internal error: {e}")),
    }
}

/// The flags every way-back command shares (`expose`, `replace`, `run`).
#[derive(Args, Debug)]
pub(crate) struct SessionArgs {
    #[command(flatten)]
    kube: KubeconfigArgs,
    /// Namespace of the Service [default: the context's namespace].
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    pub(crate) namespace: Option<String>,
    /// Namespace of the kubelan agent (the relay uses its image).
    #[arg(long, value_name = "NAMESPACE", default_value = DEFAULT_NAMESPACE)]
    agent_namespace: String,
    /// The relay's image [default: the installed agent's image].
    #[arg(long, value_name = "IMAGE")]
    image: Option<String>,
    /// How long to wait for the relay pod to be ready, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    timeout: u64,
    /// How this machine reaches the relay pod.
    #[arg(long, value_enum, default_value = "auto")]
    via: Via,
}

impl SessionArgs {
    /// Connects to the API and, per `--via`, to the agent (`kubelan_expose::via`): the
    /// client and the options of a session in `mode`. The agent session (if any) lives
    /// until `stop` is cancelled.
    pub(crate) async fn connect(
        &self,
        mode: kubelan_cluster::session_objects::Mode,
        stop: CancellationToken,
    ) -> anyhow::Result<(kubelan_cluster::ClusterClient, ExposeOptions)> {
        let kube = KubeArgs {
            kubeconfig: self.kube.kubeconfig.clone(),
            context: self.kube.context.clone(),
            namespace: self.namespace.clone(),
        };
        let request = SessionRequest {
            kube: kube.clone(),
            agent_namespace: self.agent_namespace.clone(),
            image: self.image.clone(),
            ready_timeout: Duration::from_secs(self.timeout.max(1)),
            via: match self.via {
                Via::Auto => kubelan_expose::Via::Auto,
                Via::Agent => kubelan_expose::Via::Agent,
                Via::PortForward => kubelan_expose::Via::PortForward,
            },
            client_host: kubelan_sys::process::hostname(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            mode,
        };
        let agent = crate::bootstrap::AgentArgs {
            kube,
            agent_namespace: self.agent_namespace.clone(),
            carrier: crate::bootstrap::CarrierChoice::Auto,
            carriers: Some(1),
            install: false,
            agent: None,
            credentials: None,
        };
        let start = |config, stop| async move {
            crate::bootstrap::start_with(&agent, config, stop, &[])
                .await
                .map(|s| s.session)
        };
        let note = |n: ViaNote| match n {
            ViaNote::NoAgent { namespace } => eprintln!(
                "no usable kubelan agent in {namespace}; reaching the relay by port-forward"
            ),
            ViaNote::AgentSlow { namespace } => eprintln!(
                "the kubelan agent in {namespace} did not connect within {} s; reaching the relay by port-forward",
                kubelan_expose::via::OUTER_WAIT.as_secs()
            ),
        };
        kubelan_expose::via::connect(&request, start, stop, &note)
            .await
            .map_err(|e| match e {
                ViaError::Cluster(e) => e.into(),
                ViaError::Start(e) => e,
                e => anyhow::anyhow!("{e}"),
            })
    }
}

/// API failures name the context, server and user like every other mode's (also `run`'s).
pub(crate) fn explain(
    e: ExposeError,
    cc: &kubelan_cluster::ClusterClient,
    hint: &str,
) -> anyhow::Error {
    match e {
        ExposeError::Api { action, source } => {
            ClusterError::from_api(action, source, &cc.target(), hint).into()
        }
        ExposeError::Cluster(e) => cc.explain(e, hint).into(),
        e => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ExposeArgs,
    }

    #[test]
    fn arguments_parse_into_a_plan() {
        let a = Cli::try_parse_from([
            "x", "8080", "53/udp", "--name", "dev", "--port", "80", "-n", "team",
        ])
        .unwrap()
        .args;
        let p = kubelan_expose::plan(&a.targets, &a.ports, a.name.as_deref()).unwrap();
        assert_eq!(p.ports[0].service_port, 80);
        assert_eq!(a.session.namespace.as_deref(), Some("team"));
        assert!(Cli::try_parse_from(["x"]).is_err(), "a target is required");
        let a = Cli::try_parse_from(["x", "::1:80"]).unwrap().args;
        let e = kubelan_expose::plan(&a.targets, &a.ports, None).unwrap_err();
        assert!(e.to_string().contains("brackets"), "{e}");
    }

    /// The relay Job that expose creates runs `kubelan relay` with arguments this binary's
    /// relay accepts, meaning the same listeners, carrier port, grace periods and token hash.
    #[test]
    fn the_relay_job_arguments_parse_as_kubelan_relay() {
        use kubelan_cluster::session_objects::{self as so, Mode, SessionId, SessionMeta};
        let plan = kubelan_expose::plan(&["8080".into(), "53/udp".into()], &[], None).unwrap();
        let (_, hash) = kubelan_expose::session::new_token();
        let relay = so::RelaySpec {
            image: "kubelan".into(),
            listeners: plan.ports.iter().map(|p| p.listener()).collect(),
            carrier_port: plan.carrier_port,
            grace: kubelan_expose::session::GRACE,
            first_grace: kubelan_expose::session::FIRST_GRACE,
            token_sha256: hash.clone(),
            restore: None,
        };
        let meta = SessionMeta {
            id: SessionId::generate(),
            namespace: "default".into(),
            mode: Mode::Expose,
            user: "u".into(),
            client_host: "h".into(),
            command: "c".into(),
        };
        let job = so::job(&meta, &relay);
        let args = job.spec.unwrap().template.spec.unwrap().containers[0]
            .args
            .clone()
            .unwrap();
        let cli = crate::Cli::try_parse_from(std::iter::once("kubelan".to_string()).chain(args))
            .unwrap_or_else(|e| panic!("{e}"));
        let crate::Command::Relay(r) = cli.command else {
            panic!("not the relay command")
        };
        assert_eq!(r.carrier_port, plan.carrier_port);
        assert_eq!((r.grace, r.first_grace), (10, 60));
        assert_eq!(r.token_sha256, hash);
        let listen: Vec<_> = r.listen.iter().map(|l| (l.port, l.listener)).collect();
        assert_eq!(listen, [(8080, 0), (20053, 1)]);
        assert_eq!(r.listen[1].kind, kubelan_proto::FlowKind::Udp);
    }

    #[test]
    fn every_event_has_a_line() {
        let e = ExposeEvent::Stopping {
            job: "kubelan-b7x2kq9d".into(),
        };
        assert_eq!(
            line(&e),
            "stopping: deleted job kubelan-b7x2kq9d; Kubernetes removes the relay and the session's objects"
        );
    }
}
