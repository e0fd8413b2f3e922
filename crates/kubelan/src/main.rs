//! `kubelan`: open a Kubernetes cluster's Pod, Service and DNS networks to a developer
//! machine or a whole office LAN. This binary is the command line; the work happens in the
//! library crates.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

mod bootstrap;
mod connect;
mod doctor;
mod events;
mod expose;
mod forward;
mod gateway;
mod globals;
mod live;
mod proxy;
mod replace;
mod routes;
mod run;
mod shell;
mod watcher;

#[derive(Parser, Debug)]
#[command(
    name = "kubelan",
    version,
    about = "Open a Kubernetes cluster's Pod, Service and DNS networks to your machine and your office LAN",
    long_about = "kubelan opens a Kubernetes cluster's inner networks (Pod IPs, Service ClusterIPs and cluster DNS names) to a developer machine and to a whole office LAN.\n\nThe built-in lab (`kubelan lab`) simulates a cluster in network namespaces so every mode can be tried without one."
)]
struct Cli {
    #[command(flatten)]
    globals: kubelan_cluster::global_flags::GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Port-forwards to Services, pods and Deployments that follow pod restarts; without
    /// targets, every Service of the namespaces by name (no agent needed).
    Forward(forward::ForwardArgs),
    /// Local ports become a Service in the cluster: pods connect to NAME and reach this
    /// machine (or a LAN host), until Ctrl-C; Kubernetes removes everything if the client dies.
    Expose(expose::ExposeArgs),
    /// An existing Service's traffic (every replica's) comes to this machine until Ctrl-C,
    /// then the Service is exactly as before; if the client dies, Kubernetes puts it back.
    Replace(replace::ReplaceArgs),
    /// Run a local program with a cluster address (a Service owned by the session) in its
    /// environment, for registries (Nacos, Eureka, Consul, Dubbo, etcd); the session ends
    /// with the program.
    Run(run::RunArgs),
    /// SOCKS5 and HTTP proxy into the cluster through the agent (names resolve in the cluster).
    Proxy(proxy::ProxyArgs),
    /// L3 VPN: Pod IPs, ClusterIPs and cluster DNS names reachable from this machine (root).
    Connect(connect::ConnectArgs),
    /// Share the cluster with a whole LAN: `--mode node` on a host that reaches pods, or
    /// `--mode tunnel` on any LAN host (root).
    Gateway(gateway::GatewayArgs),
    /// Check the path into the cluster step by step (API, prefixes, routes, gateway, DNS,
    /// pods on every node, MTU, return path) and say how to fix what fails.
    Doctor(doctor::DoctorArgs),
    /// Print what to enter on the office router and DNS server so the LAN reaches the cluster.
    Routes(routes::RoutesArgs),
    /// State of a running `connect` (carrier, routes and why, DNS, counters); without one,
    /// the cluster's discovered networks and what `connect` would route.
    Status(connect::StatusArgs),
    /// Stop a running `kubelan connect` (it restores routes and DNS).
    Quit,
    /// Undo what a crashed kubelan left on this machine (TUN, routes, DNS, hosts entries).
    Reset {
        /// Also undo changes of kubelan processes that are still running.
        #[arg(long)]
        force: bool,
    },
    /// Install (or update) the in-cluster agent.
    Install(kubelan_cluster::cli::InstallArgs),
    /// Remove everything `kubelan install` created.
    Uninstall(kubelan_cluster::cli::UninstallArgs),
    /// Print the RBAC a user needs for each mode.
    Rbac(kubelan_cluster::cli::RbacArgs),
    /// The in-cluster agent (what `kubelan install` runs; also standalone for tests).
    Agent(kubelan_agent::AgentArgs),
    /// The per-session relay of `expose` (what a session's Job runs in its pod).
    #[command(hide = true)]
    Relay(kubelan_agent::relay::RelayArgs),
    /// A simulated cluster in Linux network namespaces, to try kubelan without one (root).
    Lab(kubelan_lab::cli::LabArgs),
    /// Undo a session's host changes when its process dies without doing so (started by
    /// `connect` and `gateway`, one per session).
    #[command(hide = true)]
    CrashWatcher(watcher::WatcherArgs),
    /// Print shell code completing commands, flags, contexts, and the cluster's namespaces
    /// and Services: `source <(kubelan completion bash)`, `kubelan completion fish | source`.
    Completion {
        /// The shell.
        #[arg(value_enum)]
        shell: shell::Shell,
    },
    /// Write the man pages (kubelan.1 and one per subcommand) into DIR (created if missing).
    #[command(hide = true)]
    Man { dir: std::path::PathBuf },
}

use kubelan_cluster::global_flags::Output;

/// The cluster's prefixes given instead of discovered (`routes`, `connect`, `doctor`).
#[derive(clap::Args, Debug, Clone)]
struct PrefixArgs {
    /// The cluster's Service CIDR, instead of discovering it (repeatable).
    #[arg(long, value_name = "CIDR")]
    service_cidr: Vec<ipnet::IpNet>,
    /// The cluster's Pod CIDR, instead of discovering it (repeatable).
    #[arg(long, value_name = "CIDR")]
    pod_cidr: Vec<ipnet::IpNet>,
}

impl PrefixArgs {
    /// These prefixes with the domain and DNS address given as flags.
    fn overrides(
        &self,
        cluster_domain: Option<String>,
        dns_server: Option<std::net::IpAddr>,
    ) -> kubelan_cluster::discovery::DiscoveryOverrides {
        kubelan_cluster::discovery::DiscoveryOverrides {
            service_cidrs: self.service_cidr.clone(),
            pod_cidrs: self.pod_cidr.clone(),
            cluster_domain,
            dns_server,
        }
    }
}

/// Libraries whose log lines repeat, in their own words, a failure kubelan reports itself
/// in one sentence (kube-rs logs every failed request at ERROR, before our message).
/// A directive matches every target that starts with it, so none may be a prefix of
/// `kubelan` (`kube` would silence all of kubelan's own warnings).
const QUIET_LIBRARIES: &[&str] = &[
    "kube_client",
    "kube_runtime",
    "hyper",
    "hyper_util",
    "tower",
    "tower_http",
    "rustls",
    "tungstenite",
    "tokio_tungstenite",
];

/// The log filter of a command: `daemon` (agent, lab daemon) logs at info with every
/// library; the commands a user types log only kubelan's warnings, unless `-v`.
fn log_filter(daemon: bool, verbose: u8) -> String {
    match (daemon, verbose) {
        (_, 3..) => "trace".into(),
        (_, 2) => "debug".into(),
        (true, _) | (false, 1) => "info".into(),
        (false, 0) => {
            let mut f = String::from("warn");
            for l in QUIET_LIBRARIES {
                f.push_str(&format!(",{l}=off"));
            }
            f
        }
    }
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KUBELAN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(kubelan_term::stderr().is_rich())
        .with_target(false)
        .try_init();
}

/// The CLI definition, with clap's colours (help on stdout, errors on stderr) only where
/// both streams may carry them (`kubelan_term`).
fn command() -> clap::Command {
    let rich = kubelan_term::stdout().is_rich() && kubelan_term::stderr().is_rich();
    Cli::command().color(if rich {
        clap::ColorChoice::Always
    } else {
        clap::ColorChoice::Never
    })
}

/// The command line; run as `kubectl-lan` (a link or a copy: kubectl's plugin), usage and
/// help say `kubectl lan`.
fn parse_args() -> Cli {
    let argv0 = std::env::args_os().next().map(std::path::PathBuf::from);
    let plugin = argv0.is_some_and(|p| p.file_name().is_some_and(|n| n == "kubectl-lan"));
    let mut command = command();
    if plugin {
        command = command.name("kubectl-lan").bin_name("kubectl lan");
    }
    Cli::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit())
}

fn main() -> ExitCode {
    shell::answer_if_asked();
    let mut cli = parse_args();
    if let Err(e) = globals::apply(&cli.globals, &mut cli.command) {
        command()
            .error(clap::error::ErrorKind::ArgumentConflict, e)
            .exit();
    }
    let daemon = matches!(
        &cli.command,
        Command::Lab(args) if args.is_server()
    ) || matches!(&cli.command, Command::Agent(_) | Command::Relay(_));
    init_tracing(&log_filter(daemon, cli.globals.verbose));
    kubelan_sys::raise_fd_limit();
    kubelan_sys::tune_allocator();
    // The proxy and the agent run on one thread unless told otherwise: measured, a
    // multi-threaded runtime spends a third more CPU per connection on waking its other
    // workers (docs/benchmarks.md).
    let threads = match &cli.command {
        Command::Proxy(a) => Some(a.threads),
        Command::Agent(a) => Some(a.threads),
        // A handful of flows of one developer's session.
        Command::Relay(_) => Some(1),
        // Waits on one descriptor, then undoes a few changes: one thread is plenty.
        Command::CrashWatcher(_) => Some(1),
        _ => None,
    };
    let rt = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(n))
            .enable_all()
            .build(),
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The command runs as a task, on the runtime's worker threads: an accept loop on the
    // main thread would hand every new connection to a worker (a wake-up per connection).
    let result = rt.block_on(async {
        let task = tokio::spawn(async move {
            match cli.command {
                Command::Lab(args) => kubelan_lab::cli::run(args).await,
                Command::Forward(args) => forward::run(args).await,
                Command::Expose(args) => expose::run(args).await,
                Command::Replace(args) => replace::run(args).await,
                Command::Run(args) => run::run(args).await,
                Command::Proxy(args) => proxy::proxy(args).await.map(|()| ExitCode::SUCCESS),
                Command::Connect(args) => connect::connect(args).await.map(|()| ExitCode::SUCCESS),
                Command::Gateway(args) => gateway::run(args).await.map(|()| ExitCode::SUCCESS),
                Command::Doctor(args) => doctor::run(args).await,
                Command::Routes(args) => routes::run(args).await.map(|()| ExitCode::SUCCESS),
                Command::Status(args) => connect::status(args).await,
                Command::Quit => connect::quit().await.map(|()| ExitCode::SUCCESS),
                Command::Reset { force } => connect::reset(force).await,
                Command::Install(args) => kubelan_cluster::cli::run_install(args)
                    .await
                    .map(|()| ExitCode::SUCCESS),
                Command::Uninstall(args) => kubelan_cluster::cli::run_uninstall(args)
                    .await
                    .map(|()| ExitCode::SUCCESS),
                Command::Rbac(args) => {
                    kubelan_cluster::cli::run_rbac(args).map(|()| ExitCode::SUCCESS)
                }
                Command::Agent(args) => kubelan_agent::run(args).await.map(|()| ExitCode::SUCCESS),
                Command::Relay(args) => kubelan_agent::relay::run(args)
                    .await
                    .map(|()| ExitCode::SUCCESS),
                Command::CrashWatcher(args) => watcher::run(args).await,
                Command::Man { dir } => shell::man(&dir).map(|()| ExitCode::SUCCESS),
                Command::Completion { shell } => {
                    shell::completion(shell).map(|()| ExitCode::SUCCESS)
                }
            }
        });
        match task.await {
            Ok(r) => r,
            Err(e) => Err(anyhow::anyhow!("internal error: {e}")),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", render_error(&e));
            ExitCode::FAILURE
        }
    }
}

/// The message of an error that ends a command: the outermost context, then its causes,
/// each once, stopping at the first error that is already a sentence naming the fix
/// (kubelan's typed errors of the cluster and forward layers), never kube-rs' debug output.
fn render_error(e: &anyhow::Error) -> String {
    kubelan_cluster::error::one_line_with(e.as_ref(), &|layer| {
        layer.is::<kubelan_forward::ForwardError>()
            || layer.is::<kubelan_expose::ExposeError>()
            || layer.is::<kubelan_expose::RunError>()
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Checks a renderer's output against `tests/render/<name>` (`UPDATE_GOLDEN=1` rewrites it).
    pub(crate) fn golden(name: &str, actual: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/render")
            .join(name);
        kubelan_testkit::golden::check(&path, actual, "cargo test -p kubelan --bins");
    }

    #[test]
    fn library_logs_stay_below_our_messages_unless_verbose() {
        let quiet = log_filter(false, 0);
        assert!(quiet.starts_with("warn,"), "{quiet}");
        for l in ["kube_client=off", "hyper_util=off", "tower=off"] {
            assert!(quiet.contains(l), "{l}: {quiet}");
        }
        assert_eq!(log_filter(false, 1), "info");
        assert_eq!(log_filter(false, 2), "debug");
        assert_eq!(log_filter(true, 0), "info");
        // Every directive parses.
        tracing_subscriber::EnvFilter::try_new(&quiet).unwrap();
    }

    /// Log lines written through the default filter of a user's command.
    fn logged_quietly(emit: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(log_filter(false, 0)))
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let out = buf.0.lock().unwrap().clone();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_quiet_filter_silences_the_libraries_and_never_kubelan() {
        let out = logged_quietly(|| {
            tracing::warn!(target: "kube_client::client", "library");
            tracing::error!(target: "kube_runtime::watcher", "library");
            tracing::warn!(target: "hyper_util::client::legacy", "library");
            tracing::warn!(target: "tower::buffer", "library");
            tracing::warn!(target: "rustls::conn", "library");
            tracing::warn!(target: "kubelan", "ours");
            tracing::warn!(target: "kubelan_proxy::server", "ours");
            tracing::warn!(target: "kubelan_agent::serve", "ours");
            tracing::warn!(target: "kubelan_session::client", "ours");
            tracing::info!(target: "kubelan_proxy::server", "info stays below");
        });
        assert_eq!(out.matches("ours").count(), 4, "{out}");
        assert!(
            !out.contains("library") && !out.contains("info stays"),
            "{out}"
        );
    }

    #[test]
    fn errors_render_as_one_line_without_repeats() {
        let cluster = kubelan_cluster::ClusterError::NotInstalled {
            namespace: "ns".into(),
        };
        let e = anyhow::Error::new(cluster).context("starting the tunnel");
        assert_eq!(
            render_error(&e),
            "starting the tunnel: no kubelan agent in namespace ns: run `kubelan install --namespace ns` (or pass the namespace it was installed in)"
        );
        let forward = kubelan_forward::ForwardError::SeveralNamespaces { count: 2 };
        let e = anyhow::Error::new(forward);
        assert!(render_error(&e).starts_with("-n was given 2 times"));
        let io = std::io::Error::other("disk full");
        let e = anyhow::Error::new(io).context("writing /etc/hosts: disk full");
        assert_eq!(render_error(&e), "writing /etc/hosts: disk full");
    }
}
