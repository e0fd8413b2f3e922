//! `kubelan proxy`: SOCKS5 and HTTP on one local port, every flow through the session to
//! the agent (`kubelan_proxy` serves, `kubelan_proxy::SessionConnector` connects).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
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
    tunnel: AgentArgs,
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
}
