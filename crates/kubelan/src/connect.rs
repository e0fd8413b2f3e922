//! `kubelan connect`, `status`, `quit` and `reset`: flags, and what they print; the work
//! is `kubelan_vpn::connect`.

use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use ipnet::IpNet;
use kubelan_sys::journal::StateDir;
use kubelan_vpn::ConnectOptions;
use tokio_util::sync::CancellationToken;

use crate::bootstrap::AgentArgs;
use crate::{Output, PrefixArgs};

/// `kubelan connect` flags.
#[derive(Args, Debug)]
pub(crate) struct ConnectArgs {
    #[command(flatten)]
    pub(crate) tunnel: AgentArgs,
    /// Leave this prefix out of the tunnel (repeatable): a part of a cluster prefix that
    /// your LAN uses.
    #[arg(long, value_name = "CIDR")]
    pub(crate) exclude: Vec<IpNet>,
    /// Route this cluster prefix into the tunnel even though it overlaps a local route or
    /// address (repeatable).
    #[arg(long, value_name = "CIDR")]
    pub(crate) force_route: Vec<IpNet>,
    #[command(flatten)]
    prefixes: PrefixArgs,
    /// The cluster DNS domain [default: discovered, else cluster.local].
    #[arg(long, value_name = "DOMAIN")]
    pub(crate) cluster_domain: Option<String>,
    /// The cluster DNS Service IP, instead of discovering it.
    #[arg(long, value_name = "IP")]
    pub(crate) cluster_dns: Option<IpAddr>,
    /// Name of the TUN device.
    #[arg(long, value_name = "NAME", default_value = "kubelan0")]
    pub(crate) tun: String,
    /// MTU of the TUN device (TCP segments are sized to fit it).
    #[arg(long, value_name = "BYTES", default_value_t = 1400, value_parser = clap::value_parser!(u16).range(576..=9000))]
    pub(crate) mtu: u16,
    /// Do not configure split DNS (reach names with `dig @<cluster DNS IP>` only).
    #[arg(long)]
    pub(crate) no_dns: bool,
    /// The global `-o`: state changes as lines for people, or one JSON event per line.
    #[arg(skip)]
    pub(crate) output: Output,
}

/// `kubelan status` flags.
#[derive(Args, Debug)]
pub(crate) struct StatusArgs {
    /// Without a running `connect`: the cluster to show facts of (the global flags).
    #[arg(skip)]
    pub(crate) kube: kubelan_cluster::KubeArgs,
    /// The global `-o`.
    #[arg(skip)]
    pub(crate) output: Output,
}

impl ConnectArgs {
    /// The library's options; the session starts through [`crate::bootstrap`], which asks
    /// before installing a missing agent.
    pub(crate) fn options(&self) -> ConnectOptions {
        let agent = Arc::new(self.tunnel.clone());
        ConnectOptions {
            kube: self.tunnel.kube.clone(),
            agent_namespace: self.tunnel.agent_namespace.clone(),
            agent: self.tunnel.agent,
            start_session: Arc::new(move |routed: Vec<IpNet>, shutdown: CancellationToken| {
                let agent = agent.clone();
                Box::pin(async move {
                    crate::bootstrap::start(&agent, shutdown, &routed)
                        .await
                        .map(|s| s.session)
                })
            }),
            exclude: self.exclude.clone(),
            force_route: self.force_route.clone(),
            overrides: self
                .prefixes
                .overrides(self.cluster_domain.clone(), self.cluster_dns),
            tun: self.tun.clone(),
            mtu: self.mtu,
            no_dns: self.no_dns,
        }
    }
}

/// Runs `kubelan connect` until Ctrl-C, SIGTERM or `kubelan quit`.
pub(crate) async fn connect(args: ConnectArgs) -> anyhow::Result<()> {
    let events = crate::events::printer(args.output == Output::Json);
    kubelan_vpn::connect::run(
        args.options(),
        events,
        Box::pin(kubelan_sys::process::shutdown_signal()),
    )
    .await
}

/// `kubelan status`: the running connect's state, else the cluster's facts and the
/// routes a connect would add.
pub(crate) async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let state = StateDir::from_env();
    let running = match kubelan_vpn::connect::running(&state).await {
        Ok(st) => st,
        Err(e) => {
            eprintln!("note: {e:#}; showing the cluster instead");
            None
        }
    };
    if let Some(st) = running {
        if args.output == Output::Json {
            let doc = kubelan_term::json::Document::to_document(&st)?;
            println!("{}", serde_json::to_string_pretty(&doc)?);
        } else {
            print!("{st}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let preview = kubelan_vpn::connect::preview(&args.kube).await?;
    if args.output == Output::Json {
        let doc = kubelan_term::json::Document::to_document(&preview)?;
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    print!("{preview}");
    Ok(ExitCode::SUCCESS)
}

/// `kubelan quit`: asks a running connect to disconnect and waits until it has.
pub(crate) async fn quit() -> anyhow::Result<()> {
    kubelan_vpn::connect::quit(&StateDir::from_env()).await?;
    eprintln!("disconnected");
    Ok(())
}

/// `kubelan reset`: undoes what crashed kubelan processes left on this machine, and a
/// persistent gateway (its unit is a journalled change like the others).
pub(crate) async fn reset(force: bool) -> anyhow::Result<ExitCode> {
    let report = kubelan_sys::journal::reset_all(force).await;
    if report.nothing_to_do() {
        println!("nothing to reset: no changes by kubelan are left on this machine");
        return Ok(ExitCode::SUCCESS);
    }
    for line in report.lines() {
        println!("{line}");
    }
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
