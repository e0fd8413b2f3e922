//! Setting up a session to the agent from command-line flags (shared by every mode that
//! rides the tunnel), and `kubelan proxy`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use futures::future::BoxFuture;
use kubelan_cluster::error::ApiTarget;
use kubelan_cluster::preflight::{AGENT_HINT, INSTALL_HINT};
use kubelan_cluster::{ClusterError, Credentials, KubeArgs};
use kubelan_proto::{FlowError, Target};
use kubelan_proxy::{Connector, FlowIo, ProxyConfig, UdpFlow};
use kubelan_session::carrier::{
    AutoDialer, CarrierDialer, DirectDialer, EndpointSource, PodSource, PortForwardDialer,
};
use kubelan_session::{CarrierError, Session, SessionConfig, SessionState};
use tokio_util::sync::CancellationToken;

/// Which carrier to use.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub(crate) enum CarrierChoice {
    /// Direct mTLS when reachable, else port-forward.
    Auto,
    /// Only direct mutual TLS to the agent's Service / pod.
    Direct,
    /// Only port-forward through the API server.
    PortForward,
}

/// Flags that pick the cluster and the agent.
#[derive(Args, Debug, Clone)]
pub(crate) struct TunnelArgs {
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Namespace of the kubelan agent.
    #[arg(long, value_name = "NAMESPACE", default_value = "kubelan-system")]
    pub agent_namespace: String,
    /// Carrier to the agent.
    #[arg(long, value_enum, default_value = "auto")]
    pub carrier: CarrierChoice,
    /// Carriers to keep open at once (spread over agent replicas) [default: one per ready replica, at most 4].
    #[arg(long, value_name = "N")]
    pub carriers: Option<usize>,
    /// Install the agent when it is missing, without asking.
    #[arg(long)]
    pub install: bool,
    /// Use an agent at this address (direct carrier, no Kubernetes API), e.g. one started
    /// with `kubelan agent --standalone`; needs --credentials.
    #[arg(long, value_name = "ADDR", requires = "credentials")]
    pub agent: Option<SocketAddr>,
    /// Directory with ca.crt, client.crt and client.key for --agent.
    #[arg(long, value_name = "DIR")]
    pub credentials: Option<PathBuf>,
}

fn read(dir: &std::path::Path, file: &str) -> anyhow::Result<String> {
    let p = dir.join(file);
    std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
}

/// A running session plus what the user should know about it.
pub(crate) struct Tunnel {
    pub session: Session,
    /// Namespace for bare names (`web` → `web.<ns>`).
    pub namespace: String,
}

/// Builds the carriers the flags ask for and starts the session.
pub(crate) async fn start(
    args: &TunnelArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<Tunnel> {
    let config = SessionConfig::default();
    if let Some(addr) = args.agent {
        let dir = args
            .credentials
            .as_ref()
            .expect("clap requires --credentials");
        let creds = Credentials {
            ca_pem: read(dir, "ca.crt")?,
            cert_pem: read(dir, "client.crt")?,
            key_pem: read(dir, "client.key")?,
        };
        let tls = Arc::new(
            creds
                .client_config()
                .context("loading the client certificate")?,
        );
        let n = args.carriers.unwrap_or(1).clamp(1, 16);
        let dialers: Vec<Arc<dyn CarrierDialer>> = (0..n)
            .map(|_| {
                Arc::new(DirectDialer::new(
                    DirectDialer::fixed(vec![addr]),
                    tls.clone(),
                )) as Arc<dyn CarrierDialer>
            })
            .collect();
        return Ok(Tunnel {
            session: Session::start(dialers, config, shutdown),
            namespace: args
                .kube
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
        });
    }
    let cc = kubelan_cluster::connect(&args.kube).await?;
    let ns = args.agent_namespace.clone();
    // Every API failure below becomes the sentence that names its fix.
    let target = cc.target();
    let explain = |e: ClusterError| e.explain(&target, AGENT_HINT);
    let replicas = match kubelan_cluster::find_agent(&cc.client, &ns).await {
        Ok(info) => info.pods.len().max(1),
        Err(ClusterError::AgentNotReady { .. }) => {
            eprintln!("… the agent in {ns} is not ready yet; the tunnel connects when it is");
            1
        }
        Err(ClusterError::NotInstalled { .. }) if args.install || confirm_install(&ns)? => {
            let opts = kubelan_cluster::InstallOptions {
                namespace: ns.clone(),
                ..Default::default()
            };
            eprintln!("installing the kubelan agent in {ns} …");
            let report = kubelan_cluster::install(&cc.client, &opts, &|e| {
                eprintln!("  {e}");
            })
            .await
            .map_err(|e| e.explain(&target, INSTALL_HINT))?;
            eprintln!("{}", kubelan_cluster::cli::install_summary(&report));
            kubelan_cluster::find_agent(&cc.client, &ns)
                .await
                .map_err(explain)?
                .pods
                .len()
                .max(1)
        }
        Err(e) => return Err(explain(e).into()),
    };
    let n = args.carriers.unwrap_or(replicas.min(4)).clamp(1, 16);
    let direct = if args.carrier == CarrierChoice::PortForward {
        None
    } else {
        match kubelan_cluster::load_credentials(&cc.client, &ns).await {
            Ok(creds) => {
                let tls = Arc::new(
                    creds
                        .client_config()
                        .context("loading the agent credentials")?,
                );
                let client = cc.client.clone();
                let ns2 = ns.clone();
                let target2 = target.clone();
                let endpoints: EndpointSource = Arc::new(move || {
                    let (client, ns, target) = (client.clone(), ns2.clone(), target2.clone());
                    Box::pin(async move {
                        let info = kubelan_cluster::find_agent(&client, &ns)
                            .await
                            .map_err(|e| retry(e, &target))?;
                        Ok(kubelan_cluster::direct_endpoints(&info))
                    })
                });
                Some((endpoints, tls))
            }
            Err(e) if args.carrier == CarrierChoice::Direct => return Err(explain(e).into()),
            Err(e) => {
                let e = explain(e);
                eprintln!("note: direct carrier unavailable ({e}); using port-forward");
                None
            }
        }
    };
    let dialers: Vec<Arc<dyn CarrierDialer>> = (0..n)
        .map(|i| -> Arc<dyn CarrierDialer> {
            // Carrier i prefers the i-th ready replica, so carriers spread over replicas.
            let (client, ns2, target2) = (cc.client.clone(), ns.clone(), target.clone());
            let pod: PodSource = Arc::new(move || {
                let (client, ns, target) = (client.clone(), ns2.clone(), target2.clone());
                Box::pin(async move {
                    let mut info = kubelan_cluster::find_agent(&client, &ns)
                        .await
                        .map_err(|e| retry(e, &target))?;
                    info.pods.sort_by(|a, b| a.name.cmp(&b.name));
                    let n = info.pods.len().max(1);
                    info.pods
                        .get(i % n)
                        .map(|p| p.name.clone())
                        .ok_or_else(|| CarrierError::retry(format!("no ready agent pod in {ns}")))
                })
            });
            let pf = PortForwardDialer::new(cc.client.clone(), &ns, pod);
            match (&direct, args.carrier) {
                (Some((ep, tls)), CarrierChoice::Direct) => {
                    Arc::new(DirectDialer::new(ep.clone(), tls.clone()))
                }
                (Some((ep, tls)), CarrierChoice::Auto) => Arc::new(AutoDialer::new(
                    DirectDialer::new(ep.clone(), tls.clone()),
                    pf,
                )),
                _ => Arc::new(pf),
            }
        })
        .collect();
    Ok(Tunnel {
        session: Session::start(dialers, config, shutdown),
        namespace: cc.namespace,
    })
}

/// A failure to find the agent while (re)connecting, as the carrier's retryable error.
fn retry(e: ClusterError, target: &ApiTarget) -> CarrierError {
    CarrierError::retry(e.explain(target, AGENT_HINT).to_string())
}

fn confirm_install(ns: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!(
            "the kubelan agent is not installed in {ns}: run `kubelan install` (or pass --install)"
        );
    }
    eprint!("The kubelan agent is not installed in {ns}. Install it now? [y/N] ");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

/// Prints session state changes (to stderr) until shutdown.
pub(crate) fn report_state(session: &Session, shutdown: CancellationToken) {
    on_state_change(session, shutdown, |now, line| {
        let mark = match now {
            SessionState::Connected(_) => "✓",
            SessionState::Failed(_) => "✗",
            _ => "…",
        };
        eprintln!("{mark} {line}");
    });
}

/// Calls `f` with each new session state (and its one-line text) until shutdown.
pub(crate) fn on_state_change(
    session: &Session,
    shutdown: CancellationToken,
    mut f: impl FnMut(&SessionState, &str) + Send + 'static,
) {
    let mut rx = session.state();
    tokio::spawn(async move {
        let mut last = String::new();
        loop {
            let now = rx.borrow_and_update().clone();
            let line = now.to_string();
            if line != last {
                f(&now, &line);
                last = line;
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { return },
                () = shutdown.cancelled() => return,
            }
        }
    });
}

/// The session as a proxy [`Connector`]; single-label names get the namespace appended,
/// as a pod's DNS search path would.
struct SessionConnector {
    session: Session,
    namespace: String,
    /// Wait for the agent's answer before accepting every CONNECT.
    strict: bool,
}

impl SessionConnector {
    fn qualify(&self, target: Target) -> Target {
        match target {
            Target::Name { host, port } if !host.contains('.') => Target::Name {
                host: format!("{host}.{}", self.namespace),
                port,
            },
            t => t,
        }
    }
}

impl Connector for SessionConnector {
    fn connect(&self, target: Target) -> BoxFuture<'static, Result<Box<dyn FlowIo>, FlowError>> {
        let session = self.session.clone();
        let target = self.qualify(target);
        // An address inside the prefixes the agent advertised is connected optimistically
        // (as ss-local does): one round trip less; if the agent then fails, the client's
        // connection is reset. Names and other addresses wait, so their errors become
        // proper SOCKS/HTTP replies.
        let fast =
            !self.strict && matches!(&target, Target::Addr(a) if self.session.advertised(a.ip()));
        Box::pin(async move {
            if fast {
                let conn = session.connect_optimistic(target).await?;
                return Ok(Box::new(conn) as Box<dyn FlowIo>);
            }
            let conn = session.connect(target).await?;
            Ok(Box::new(conn) as Box<dyn FlowIo>)
        })
    }

    fn open_udp(&self, target: Target) -> BoxFuture<'static, Result<UdpFlow, FlowError>> {
        let session = self.session.clone();
        let target = self.qualify(target);
        Box::pin(async move {
            let (tx, rx) = session.open_udp(target).await?;
            Ok(UdpFlow { tx, rx })
        })
    }
}

/// `kubelan proxy` flags.
#[derive(Args, Debug)]
pub(crate) struct ProxyArgs {
    /// Address to listen on (SOCKS5 and HTTP on the same port) [default: 127.0.0.1:1080,
    /// or 0.0.0.0:1080 with --allow-lan].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Share the proxy with other machines (listen on a LAN address); requires --auth.
    #[arg(long)]
    allow_lan: bool,
    /// Require this user:password (SOCKS5 username/password, HTTP Basic proxy auth).
    #[arg(long, value_name = "USER:PASSWORD", env = "KUBELAN_PROXY_AUTH")]
    auth: Option<kubelan_proxy::Credentials>,
    /// Always wait for the agent's answer before accepting a CONNECT (by default, addresses
    /// inside the cluster's Pod/Service prefixes are accepted at once, saving a round trip;
    /// a failure then resets the connection instead of returning a SOCKS/HTTP error).
    #[arg(long)]
    strict: bool,
    /// Threads for the data path. One (the default) serves thousands of connections per
    /// second with the least CPU and latency; add threads when one core is saturated.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub(crate) threads: u16,
    #[command(flatten)]
    tunnel: TunnelArgs,
}

pub(crate) async fn proxy(args: ProxyArgs) -> anyhow::Result<()> {
    let listen = args.listen.unwrap_or_else(|| {
        if args.allow_lan {
            SocketAddr::from(([0, 0, 0, 0], 1080))
        } else {
            SocketAddr::from(([127, 0, 0, 1], 1080))
        }
    });
    if !listen.ip().is_loopback() && args.auth.is_none() {
        bail!(
            "{listen} is reachable from other machines: refusing to start an open proxy into the cluster; add --auth USER:PASSWORD"
        );
    }
    if !listen.ip().is_loopback() && !args.allow_lan {
        bail!(
            "{listen} is not a loopback address: pass --allow-lan (with --auth) to share the proxy"
        );
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!("cannot listen on {listen} (in use? pick another with --listen)")
        })?;
    let shutdown = CancellationToken::new();
    let tunnel = start(&args.tunnel, shutdown.clone()).await?;
    report_state(&tunnel.session, shutdown.clone());
    let mut config = ProxyConfig::default();
    config.auth = args.auth.clone();
    let connector = Arc::new(SessionConnector {
        session: tunnel.session.clone(),
        namespace: tunnel.namespace.clone(),
        strict: args.strict,
    });
    let local = listener.local_addr()?;
    let host = if local.ip().is_unspecified() {
        "<this machine's address>".to_string()
    } else {
        local.to_string()
    };
    let cred = if args.auth.is_some() {
        "USER:PASSWORD@"
    } else {
        ""
    };
    eprintln!("kubelan proxy on {local} (SOCKS5 + HTTP; names resolve in the cluster)");
    eprintln!(
        "  curl --socks5-hostname {host} http://web.default.svc.cluster.local   |   export ALL_PROXY=socks5h://{cred}{host}   |   java -DsocksProxyHost={} -DsocksProxyPort={}",
        local.ip(),
        local.port()
    );
    let server = kubelan_proxy::ProxyServer::new(connector, config);
    let serve = server.serve(listener, shutdown.clone());
    tokio::select! {
        () = serve => {}
        () = crate::shutdown_signal() => {}
    }
    shutdown.cancel();
    let s = server.stats();
    eprintln!("proxy stopped: {s}");
    Ok(())
}
