//! Setting up a session to the agent from command-line flags (shared by every mode that
//! rides the tunnel), and `kubelan proxy`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use futures::future::BoxFuture;
use ipnet::IpNet;
use kubelan_cluster::error::ApiTarget;
use kubelan_cluster::preflight::{AGENT_HINT, INSTALL_HINT};
use kubelan_cluster::{ClusterError, Credentials, KubeArgs};
use kubelan_proto::{FlowError, Target};
use kubelan_proxy::{Connector, FlowIo, ProxyConfig, UdpFlow};
use kubelan_session::carrier::{
    AutoDialer, CarrierDialer, DirectDialer, EndpointSource, LOOKUP_TIMEOUT, Lookup, PodSource,
    PortForwardDialer,
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

/// The agent's direct addresses a carrier may dial: not those inside `routed` (prefixes
/// the caller routes into the tunnel itself, where a "direct" carrier would run inside
/// another carrier).
fn dialable(info: &kubelan_cluster::AgentInfo, routed: &[IpNet]) -> Vec<SocketAddr> {
    kubelan_cluster::direct_endpoints(info)
        .into_iter()
        .filter(|a| !routed.iter().any(|n| n.contains(&a.ip())))
        .collect()
}

/// Builds the carriers the flags ask for and starts the session. `routed`: prefixes the
/// caller routes into the tunnel (`connect`), never dialed directly.
pub(crate) async fn start(
    args: &TunnelArgs,
    shutdown: CancellationToken,
    routed: &[IpNet],
) -> anyhow::Result<Tunnel> {
    start_with(args, SessionConfig::default(), shutdown, routed).await
}

/// [`start`] with the session's settings (for example capabilities the agent must have).
pub(crate) async fn start_with(
    args: &TunnelArgs,
    config: SessionConfig,
    shutdown: CancellationToken,
    routed: &[IpNet],
) -> anyhow::Result<Tunnel> {
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
    // What the API says now seeds the carriers; afterwards they reconnect from what they
    // know and ask the API only in parallel.
    let agent = match kubelan_cluster::find_agent(&cc.client, &ns).await {
        Ok(info) => Some(info),
        Err(ClusterError::AgentNotReady { .. }) => {
            eprintln!("… the agent in {ns} is not ready yet; the tunnel connects when it is");
            None
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
            Some(
                kubelan_cluster::find_agent(&cc.client, &ns)
                    .await
                    .map_err(explain)?,
            )
        }
        Err(e) => return Err(explain(e).into()),
    };
    let mut pods: Vec<String> = agent
        .iter()
        .flat_map(|a| a.pods.iter().map(|p| p.name.clone()))
        .collect();
    pods.sort();
    let replicas = pods.len().max(1);
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
                let routed2 = routed.to_vec();
                let target2 = target.clone();
                let source: EndpointSource = Arc::new(move || {
                    let (client, ns, routed, target) = (
                        client.clone(),
                        ns2.clone(),
                        routed2.clone(),
                        target2.clone(),
                    );
                    Box::pin(async move {
                        let info = kubelan_cluster::find_agent(&client, &ns)
                            .await
                            .map_err(|e| retry(e, &target))?;
                        Ok(dialable(&info, &routed))
                    })
                });
                // One lookup shared by every carrier: reconnecting together, they ask once.
                let endpoints = Lookup::new(source, LOOKUP_TIMEOUT);
                if let Some(info) = &agent {
                    endpoints.seed(dialable(info, routed));
                }
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
            let source: PodSource = Arc::new(move || {
                let (client, ns, target) = (client.clone(), ns2.clone(), target2.clone());
                Box::pin(async move {
                    let mut info = kubelan_cluster::find_agent(&client, &ns)
                        .await
                        .map_err(|e| retry(e, &target))?;
                    info.pods.sort_by(|a, b| a.name.cmp(&b.name));
                    let n = info.pods.len().max(1);
                    info.pods
                        .get(i % n)
                        .map(|p| vec![p.name.clone()])
                        .ok_or_else(|| CarrierError::retry(format!("no ready agent pod in {ns}")))
                })
            });
            let pod = Lookup::new(source, LOOKUP_TIMEOUT);
            if !pods.is_empty() {
                pod.seed(vec![pods[i % pods.len()].clone()]);
            }
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

/// A state change as printed: a mark and the state's one line.
fn state_line(state: &SessionState) -> String {
    let mark = match state {
        SessionState::Connected { .. } => "✓",
        SessionState::Failed(_) => "✗",
        _ => "…",
    };
    format!("{mark} {state}")
}

/// Prints session state changes (to stderr) until shutdown.
pub(crate) fn report_state(session: &Session, shutdown: CancellationToken) {
    on_state_change(session, shutdown, |now, _| eprintln!("{}", state_line(now)));
}

/// Calls `f` with each new session state (and its one-line text) until shutdown; nothing
/// after shutdown began (stopping is not a state change of the tunnel).
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
            if shutdown.is_cancelled() {
                return;
            }
            if line != last {
                f(&now, &line);
                last = line;
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                r = rx.changed() => if r.is_err() { return },
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
    /// Share the proxy with other machines (listen on a LAN address); requires
    /// credentials (--auth-file or KUBELAN_PROXY_AUTH).
    #[arg(long)]
    allow_lan: bool,
    /// Require the user:password on the first line of FILE (SOCKS5 username/password,
    /// HTTP Basic proxy auth). FILE must not be readable by group or others
    /// (chmod 600 FILE). Without --auth-file or --auth, the environment variable
    /// KUBELAN_PROXY_AUTH=user:password is used.
    #[arg(long, value_name = "FILE", conflicts_with = "auth")]
    auth_file: Option<PathBuf>,
    /// Require this user:password. Every user of this machine can read it in the
    /// process list (ps): prefer --auth-file or KUBELAN_PROXY_AUTH when sharing.
    #[arg(long, value_name = "USER:PASSWORD")]
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

/// The environment variable holding `user:password` for `kubelan proxy`.
const AUTH_ENV: &str = "KUBELAN_PROXY_AUTH";

/// Largest credentials file read (the first line is all that counts).
const AUTH_FILE_MAX: u64 = 64 * 1024;

/// The proxy's credentials, from --auth, --auth-file or [`AUTH_ENV`] (in that order),
/// and whether they came from the command line.
fn proxy_credentials(
    args: &ProxyArgs,
) -> anyhow::Result<Option<(kubelan_proxy::Credentials, bool)>> {
    if let Some(c) = &args.auth {
        return Ok(Some((c.clone(), true)));
    }
    if let Some(path) = &args.auth_file {
        return read_auth_file(path).map(|c| Some((c, false)));
    }
    match std::env::var(AUTH_ENV) {
        Ok(v) if v.is_empty() => Ok(None),
        Ok(v) => v
            .parse()
            .map(|c| Some((c, false)))
            .with_context(|| format!("{AUTH_ENV} is not usable")),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            bail!("{AUTH_ENV} is not valid UTF-8: set it to user:password")
        }
    }
}

/// Reads `user:password` from the first line of `path`, refusing a file other users
/// could read.
fn read_auth_file(path: &std::path::Path) -> anyhow::Result<kubelan_proxy::Credentials> {
    use std::io::Read as _;
    let shown = path.display();
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open the proxy credentials file {shown}"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = file
            .metadata()
            .with_context(|| format!("cannot read the permissions of {shown}"))?
            .permissions()
            .mode();
        if let Some(why) = kubelan_proxy::file_mode_problem(mode) {
            bail!(
                "refusing the proxy credentials file {shown}: {why}, so others could read the password; run `chmod 600 {shown}`"
            );
        }
    }
    let mut text = String::new();
    file.take(AUTH_FILE_MAX)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read {shown} as text"))?;
    kubelan_proxy::Credentials::from_file_text(&text)
        .with_context(|| format!("the proxy credentials file {shown} is not usable"))
}

pub(crate) async fn proxy(args: ProxyArgs) -> anyhow::Result<()> {
    let listen = args.listen.unwrap_or_else(|| {
        if args.allow_lan {
            SocketAddr::from(([0, 0, 0, 0], 1080))
        } else {
            SocketAddr::from(([127, 0, 0, 1], 1080))
        }
    });
    let credentials = proxy_credentials(&args)?;
    if !listen.ip().is_loopback() && credentials.is_none() {
        bail!(
            "{listen} is reachable from other machines: refusing to start an open proxy into the cluster; add --auth-file FILE (a chmod 600 file holding user:password) or set {AUTH_ENV}=user:password"
        );
    }
    if !listen.ip().is_loopback() && !args.allow_lan {
        bail!(
            "{listen} is not a loopback address: pass --allow-lan (with --auth-file) to share the proxy"
        );
    }
    if !listen.ip().is_loopback() && matches!(credentials, Some((_, true))) {
        eprintln!(
            "warning: --auth puts the password on the command line, where every user of this machine can read it (ps); use --auth-file FILE (chmod 600) or {AUTH_ENV} instead"
        );
    }
    let auth = credentials.map(|(c, _)| c);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!("cannot listen on {listen} (in use? pick another with --listen)")
        })?;
    let shutdown = CancellationToken::new();
    let tunnel = start(&args.tunnel, shutdown.clone(), &[]).await?;
    report_state(&tunnel.session, shutdown.clone());
    let mut config = ProxyConfig::default();
    config.auth = auth.clone();
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
    let cred = if auth.is_some() { "USER:PASSWORD@" } else { "" };
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use kubelan_cluster::{AgentInfo, AgentPod, AgentService, NodeAddresses};
    use kubelan_session::{CarrierInfo, CarrierKind};

    use super::*;

    /// A credentials file with `text` and `mode` in a fresh temporary directory.
    fn auth_file(tag: &str, text: &str, mode: u32) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kubelan-auth-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("auth");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn auth_files_must_be_private_and_hold_user_password() {
        let good = auth_file("good", "alice:s3cret\n", 0o600);
        let c = read_auth_file(&good).unwrap();
        assert_eq!(c.username(), "alice");
        assert!(!format!("{c:?}").contains("s3cret"));

        let open = auth_file("open", "alice:s3cret\n", 0o644);
        let e = format!("{:#}", read_auth_file(&open).unwrap_err());
        assert!(
            e.contains("group and others (mode 0644)")
                && e.contains(&format!("chmod 600 {}", open.display())),
            "{e}"
        );
        assert!(!e.contains("s3cret"), "{e}");

        let group = auth_file("group", "alice:s3cret\n", 0o640);
        let e = format!("{:#}", read_auth_file(&group).unwrap_err());
        assert!(e.contains("its group") && e.contains("chmod 600"), "{e}");

        let empty = auth_file("empty", "\n", 0o600);
        let e = format!("{:#}", read_auth_file(&empty).unwrap_err());
        assert!(e.contains("first line must be user:password"), "{e}");

        let e = format!(
            "{:#}",
            read_auth_file(std::path::Path::new("/nonexistent/kubelan-auth")).unwrap_err()
        );
        assert!(
            e.contains("cannot open the proxy credentials file /nonexistent/kubelan-auth"),
            "{e}"
        );
        for p in [good, open, group, empty] {
            let _ = std::fs::remove_dir_all(p.parent().unwrap());
        }
    }

    #[test]
    fn each_state_change_is_one_line_with_a_mark() {
        let direct = CarrierInfo {
            kind: CarrierKind::Direct,
            peer: "10.4.7.11:30443".into(),
            agent: "kubelan-system/kubelan-agent-x on node1".into(),
            version: 1,
            software: "kubelan 0.1.0".into(),
        };
        let why = "direct mTLS to 10.4.7.11:30443 (agent kubelan-system/kubelan-agent-x on node1): no answer to pings for 3.0 s";
        for (state, line) in [
            (SessionState::Connecting, "… connecting".to_string()),
            (
                SessionState::Connected {
                    carriers: vec![direct],
                    down: None,
                },
                "✓ connected via direct mTLS to 10.4.7.11:30443 (agent kubelan-system/kubelan-agent-x on node1)"
                    .to_string(),
            ),
            (
                SessionState::Reconnecting { error: why.into() },
                format!("… reconnecting: {why}"),
            ),
            (
                SessionState::Failed("the agent refused the session".into()),
                "✗ failed: the agent refused the session".to_string(),
            ),
        ] {
            assert_eq!(state_line(&state), line);
        }
    }

    #[test]
    fn addresses_routed_into_the_tunnel_are_not_dialed_directly() {
        let info = AgentInfo {
            namespace: "kubelan-system".into(),
            pods: vec![AgentPod {
                name: "kubelan-agent-x".into(),
                ip: Some("172.17.32.5".parse().unwrap()),
                node: Some("node1".into()),
            }],
            service: Some(AgentService {
                service_type: "NodePort".into(),
                port: 7443,
                cluster_ip: Some("172.17.16.77".parse().unwrap()),
                node_port: Some(30443),
                load_balancer_ips: vec![],
                load_balancer_hostnames: vec![],
            }),
            nodes: vec![NodeAddresses {
                name: "node1".into(),
                ready: true,
                internal: vec!["10.4.7.11".parse().unwrap()],
                external: vec![],
            }],
            notes: vec![],
        };
        let all: Vec<String> = dialable(&info, &[]).iter().map(|a| a.to_string()).collect();
        assert_eq!(all, ["10.4.7.11:30443", "172.17.32.5:7443"]);
        let routed: Vec<IpNet> = vec!["172.17.32.0/19".parse().unwrap()];
        let some: Vec<String> = dialable(&info, &routed)
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(some, ["10.4.7.11:30443"]);
    }
}
