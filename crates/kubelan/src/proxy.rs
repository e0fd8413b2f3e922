//! `kubelan proxy`: SOCKS5 and HTTP on one local port, every flow through the session to
//! the agent (`kubelan_proxy` serves, `kubelan_proxy::SessionConnector` connects).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use kubelan_proxy::setup::{self, AUTH_ENV};
use kubelan_proxy::{ProxyConfig, SessionConnector};
use tokio_util::sync::CancellationToken;

use crate::bootstrap::{AgentArgs, report_state, start};

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
    pub(crate) tunnel: AgentArgs,
}

pub(crate) async fn proxy(args: ProxyArgs) -> anyhow::Result<()> {
    let listen = args.listen.unwrap_or_else(|| {
        if args.allow_lan {
            SocketAddr::from(([0, 0, 0, 0], 1080))
        } else {
            SocketAddr::from(([127, 0, 0, 1], 1080))
        }
    });
    let credentials = setup::credentials(
        args.auth.as_ref(),
        args.auth_file.as_deref(),
        std::env::var(AUTH_ENV),
    )?;
    if setup::check_listen(listen, credentials.as_ref(), args.allow_lan)? {
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
    let connector = Arc::new(SessionConnector::new(
        tunnel.session.clone(),
        tunnel.namespace.clone(),
        args.strict,
    ));
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
        () = kubelan_sys::process::shutdown_signal() => {}
    }
    shutdown.cancel();
    let s = server.stats();
    eprintln!("proxy stopped: {s}");
    Ok(())
}
