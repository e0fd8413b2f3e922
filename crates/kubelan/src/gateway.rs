//! `kubelan gateway`: flags; the work is `kubelan_vpn::gateway`.

use std::net::IpAddr;

use clap::{Args, ValueEnum};
use ipnet::IpNet;
use kubelan_vpn::{GatewayMode, GatewayOptions};

use crate::Output;
use crate::connect::ConnectArgs;

/// The node gateway's nftables table (`kubelan doctor` looks for it).
pub(crate) use kubelan_vpn::gateway::TABLE;

/// Which kind of gateway.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub(crate) enum Mode {
    /// This host already routes to pods (a cluster node, or a host with routes to them):
    /// kernel forwarding + SNAT.
    Node,
    /// Nothing here routes to pods: TUN + session to the agent, as `kubelan connect`.
    Tunnel,
}

/// `kubelan gateway` flags.
#[derive(Args, Debug)]
pub(crate) struct GatewayArgs {
    /// `node`: this host reaches pods already; `tunnel`: reach them through the agent.
    #[arg(long, value_enum)]
    mode: Mode,
    /// A LAN to serve (repeatable), e.g. 172.16.0.0/18; other sources are neither
    /// forwarded by kubelan's rules nor answered by its DNS.
    #[arg(long, value_name = "CIDR", required = true)]
    lan: Vec<IpNet>,
    /// Node mode: do not masquerade; pods then see LAN clients' real addresses, which
    /// needs a route back to the LAN on every node (`kubelan doctor` checks it).
    #[arg(long)]
    no_snat: bool,
    /// Address to serve DNS on [default: this host's address towards the first --lan].
    #[arg(long, value_name = "IP")]
    dns_listen: Option<IpAddr>,
    /// DNS port (53 is what LAN clients and DNS servers expect).
    #[arg(long, value_name = "PORT", default_value_t = 53)]
    dns_port: u16,
    /// Install this gateway as the systemd unit `kubelan-gateway.service` (started now and
    /// at every boot, which restores forwarding and the nft table) instead of running it
    /// in the foreground. `kubelan reset` removes the unit.
    #[arg(long)]
    persist: bool,
    /// Everything `kubelan connect` takes (cluster, agent, prefixes, TUN); the TUN flags
    /// only apply to `--mode tunnel`.
    #[command(flatten)]
    pub(crate) connect: ConnectArgs,
}

impl From<Mode> for GatewayMode {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Node => GatewayMode::Node,
            Mode::Tunnel => GatewayMode::Tunnel,
        }
    }
}

/// Runs the gateway until Ctrl-C or SIGTERM (or, with `--persist`, installs it).
pub(crate) async fn run(args: GatewayArgs) -> anyhow::Result<()> {
    let json = args.connect.output == Output::Json;
    let opts = GatewayOptions {
        mode: args.mode.into(),
        lans: args.lan.clone(),
        no_snat: args.no_snat,
        dns_listen: args.dns_listen,
        dns_port: args.dns_port,
        persist: args.persist,
        live_summary: !json && kubelan_term::stderr().is_rich(),
        connect: args.connect.options(),
    };
    let events = crate::events::printer(json);
    kubelan_vpn::gateway::run(
        opts,
        events,
        Box::pin(kubelan_sys::process::shutdown_signal()),
    )
    .await
}
