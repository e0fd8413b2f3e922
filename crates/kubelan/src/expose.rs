//! `kubelan expose`: arguments, the output (a live table on a terminal, plain lines
//! otherwise, JSON lines with `--output json`) and exit codes. The session itself is
//! `kubelan_expose`.

use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, Args, ValueEnum};
use kubelan_cluster::names::DEFAULT_NAMESPACE;
use kubelan_cluster::session_objects::Mode;
use kubelan_cluster::{KubeArgs, KubeconfigArgs};
use kubelan_expose::{
    ExposeError, ExposeEvent, ExposeOptions, SessionRequest, Table, ViaError, ViaNote,
};
use tokio::sync::mpsc;

use crate::Output;
use crate::live::Screen;
use tokio_util::sync::CancellationToken;

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
    pub(crate) session: SessionArgs,
    /// The global `-o` (JSON: one object per event and line).
    #[arg(skip)]
    pub(crate) output: Output,
}

/// What the user sees: events as lines (or JSON), and on a terminal the table redrawn
/// below them.
struct Ui {
    screen: Screen,
}

impl Ui {
    fn draw(&mut self, table: &Table) {
        if self.screen.mode == crate::live::Mode::Table {
            self.screen.draw(&table.render(Screen::width()));
        }
    }

    fn event(&mut self, e: &ExposeEvent, table: &Table) {
        // Connections show in the table, not one line each.
        let in_table = matches!(
            e,
            ExposeEvent::ConnectionOpened { .. }
                | ExposeEvent::ConnectionClosed { error: None, .. }
        );
        self.screen.event(
            || kubelan_term::json::Document::to_document(e).unwrap_or_default(),
            || e.to_string(),
            in_table,
            || table.render(Screen::width()),
        );
    }
}

/// Runs `kubelan expose` until Ctrl-C or SIGTERM.
pub(crate) async fn run(args: ExposeArgs) -> anyhow::Result<ExitCode> {
    let plan = kubelan_expose::plan(&args.targets, &args.ports, args.name.as_deref())?;
    let ports = plan.ports.clone();
    let start = move |options: ExposeOptions, events, shutdown| {
        tokio::spawn(async move { kubelan_expose::run(&plan, &options, events, shutdown).await })
    };
    drive(&args.session, Mode::Expose, &ports, args.output, start).await
}

/// Runs a way-back session (`expose`, `replace`): connects as the flags say, then renders
/// its events (table, lines or JSON) until it ends; Ctrl-C or SIGTERM asks it to stop.
/// `start` spawns the session with its options, events sender and shutdown token.
pub(crate) async fn drive<F>(
    session: &SessionArgs,
    mode: Mode,
    ports: &[kubelan_expose::spec::ExposedPort],
    output: Output,
    start: F,
) -> anyhow::Result<ExitCode>
where
    F: FnOnce(
        ExposeOptions,
        mpsc::UnboundedSender<ExposeEvent>,
        CancellationToken,
    ) -> tokio::task::JoinHandle<Result<(), ExposeError>>,
{
    let outer_stop = CancellationToken::new();
    let _stop_outer = outer_stop.clone().drop_guard();
    let (cc, options) = session.connect(mode, outer_stop).await?;
    let mut ui = Ui {
        screen: Screen::new(output == Output::Json),
    };
    let mut table = Table::new(ports);
    let (events, mut rx) = mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    let running = start(options, events, shutdown.clone());
    tokio::pin!(running);
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
            r = &mut running => break r,
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
        Ok(Err(e)) => Err(e.explain(&cc, mode).into()),
        Err(e) => Err(anyhow::anyhow!("internal error: {e}")),
    }
}

/// The flags every way-back command shares (`expose`, `replace`, `run`).
#[derive(Args, Debug)]
pub(crate) struct SessionArgs {
    /// The global `--kubeconfig` and `--context`.
    #[arg(skip)]
    pub(crate) kube: KubeconfigArgs,
    /// The global `-n`: the Service's namespace [default: the context's namespace].
    #[arg(skip)]
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
        mode: Mode,
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
        let agent = request.bootstrap_options();
        let start = |config, stop| async move {
            crate::bootstrap::start_with(&agent, false, config, stop, &[])
                .await
                .map(|s| s.session)
        };
        let note = |n: ViaNote| eprintln!("{n}");
        kubelan_expose::via::connect(&request, start, stop, &note)
            .await
            .map_err(|e| match e {
                ViaError::Cluster(e) => e.into(),
                ViaError::Start(e) => e,
                e => anyhow::anyhow!("{e}"),
            })
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
        let a = Cli::try_parse_from(["x", "8080", "53/udp", "--name", "dev", "--port", "80"])
            .unwrap()
            .args;
        let p = kubelan_expose::plan(&a.targets, &a.ports, a.name.as_deref()).unwrap();
        assert_eq!(p.ports[0].service_port, 80);
        assert!(Cli::try_parse_from(["x"]).is_err(), "a target is required");
        let a = Cli::try_parse_from(["x", "::1:80"]).unwrap().args;
        let e = kubelan_expose::plan(&a.targets, &a.ports, None).unwrap_err();
        assert!(e.to_string().contains("brackets"), "{e}");
    }
}
