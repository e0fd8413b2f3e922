//! `kubelan gateway`: the cluster's Pod and Service networks and cluster DNS names for a
//! whole LAN, with nothing installed on the LAN's machines (one static route on the office
//! router, `kubelan routes` prints it).
//!
//! - `--mode node` (a host that already reaches pods, typically a cluster node): kernel
//!   forwarding, SNAT of LAN → cluster traffic in kubelan's own nftables table, and a DNS
//!   server on the LAN address (cluster names → the cluster DNS, the rest → this host's
//!   resolvers).
//! - `--mode tunnel` (any Linux host of the LAN): the TUN and session of `kubelan connect`,
//!   kernel forwarding of LAN traffic into the TUN, and the same DNS server (cluster names
//!   through the tunnel).
//!
//! Order of work, so that bad input changes nothing: flags → leftovers of a crashed run →
//! cluster discovery → the host plan (LAN checks against the cluster prefixes) → DNS
//! sockets bound (port 53 taken is reported here) → host changes through the guard.

pub mod persist;
mod rules;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use ipnet::IpNet;
use kubelan_cluster::discovery::{self, ClusterFacts};
use kubelan_dns::SplitZones;
use kubelan_sys::journal::{HostGuard, StateDir};
use nftables::types::NfFamily;
use tokio_util::sync::CancellationToken;

use crate::connect::{self, ConnectOptions, LanSide, Stop};
use crate::dnsrelay::{self, ClusterPath, DnsRelay, DnsStats, LanDns};
use crate::event::{Event, EventSink, Summary};
use crate::plan::{self, DnsChange, HostPlan, NftChange, PlanInput, PlanMode, TunSpec};

pub use rules::TABLE;

/// Which kind of gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GatewayMode {
    /// This host already routes to pods: kernel forwarding + SNAT.
    Node,
    /// Nothing here routes to pods: TUN + session to the agent, as `kubelan connect`.
    Tunnel,
}

/// What `kubelan gateway` is asked to do.
#[derive(Clone)]
pub struct GatewayOptions {
    /// Node or tunnel.
    pub mode: GatewayMode,
    /// The LANs served.
    pub lans: Vec<IpNet>,
    /// Node mode: do not masquerade.
    pub no_snat: bool,
    /// The DNS address [default: this host's address towards the first LAN].
    pub dns_listen: Option<IpAddr>,
    /// The DNS port.
    pub dns_port: u16,
    /// Install as a systemd unit instead of running in the foreground.
    pub persist: bool,
    /// Refresh the node gateway's summary in place every 2 s (a terminal) instead of an
    /// event every 30 s when it changed.
    pub live_summary: bool,
    /// Everything `connect` takes (the TUN settings only apply to tunnel mode).
    pub connect: ConnectOptions,
}

/// Runs the gateway until `stop` completes; with `persist`, installs it as a systemd
/// unit and returns.
///
/// # Errors
/// A sentence naming the fix when a check fails (nothing changed then).
pub async fn run(opts: GatewayOptions, events: EventSink, stop: Stop) -> anyhow::Result<()> {
    if !kubelan_sys::is_root() {
        bail!(
            "kubelan gateway enables forwarding, adds firewall rules and serves DNS on port 53: run it with sudo"
        );
    }
    let lan = checked_lans(&opts.lans)?;
    if opts.persist {
        let (unit, path) = persist::install(Path::new(persist::UNIT_DIR)).await?;
        events(Event::Persisted { unit, path });
        return Ok(());
    }
    if let Ok(local) = kubelan_sys::net::addresses().await
        && let Some(message) = same_subnet_warning(&lans_on_own_subnet(&lan, &local))
    {
        events(Event::Warning { message });
    }
    match opts.mode {
        GatewayMode::Tunnel => {
            let listen = dns_listen(&opts, &lan).await?;
            let sockets = if opts.connect.no_dns {
                None
            } else {
                Some(dnsrelay::bind_lan(listen).await?)
            };
            let extra = LanSide {
                lans: lan,
                dns: sockets.map(|s| (s, listen)),
            };
            connect::run_tunnel(opts.connect, Some(extra), events, stop).await
        }
        GatewayMode::Node => node(opts, lan, events, stop).await,
    }
}

/// The `--lan` prefixes, refused when they overlap each other.
fn checked_lans(lans: &[IpNet]) -> anyhow::Result<Vec<IpNet>> {
    let lans: Vec<IpNet> = lans.iter().map(IpNet::trunc).collect();
    for (i, a) in lans.iter().enumerate() {
        for b in &lans[i + 1..] {
            if a.contains(b) || b.contains(a) {
                bail!(
                    "--lan {a} and --lan {b} overlap; give each LAN once (the larger prefix covers the smaller). Nothing was changed."
                );
            }
        }
    }
    Ok(lans)
}

/// The DNS address: `--dns-listen` (must be this host's), else this host's source address
/// towards the first LAN.
async fn dns_listen(opts: &GatewayOptions, lans: &[IpNet]) -> anyhow::Result<SocketAddr> {
    let local: Vec<IpAddr> = kubelan_sys::net::addresses()
        .await
        .context("reading this host's addresses")?
        .into_iter()
        .map(|a| a.net.addr())
        .collect();
    let ip = match opts.dns_listen {
        Some(ip) => {
            if !local.contains(&ip) {
                bail!(
                    "--dns-listen {ip} is not an address of this host (it has {}). Nothing was changed.",
                    local
                        .iter()
                        .map(IpAddr::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            ip
        }
        None => {
            let first = lans.first().context("no --lan given")?;
            let probe = first.hosts().next().unwrap_or(first.addr());
            let path = kubelan_sys::net::route_get(probe)
                .await
                .with_context(|| format!("this host has no route to the LAN {first}"))?;
            match path.source {
                Some(src) if local.contains(&src) && !src.is_loopback() => src,
                _ => bail!(
                    "cannot tell which address of this host the LAN {first} reaches; pass --dns-listen IP"
                ),
            }
        }
    };
    Ok(SocketAddr::new(ip, opts.dns_port))
}

/// The `--lan` prefixes this host has an address in, with the interface and its subnet:
/// clients there share a subnet with the gateway.
fn lans_on_own_subnet(
    lans: &[IpNet],
    local: &[kubelan_sys::net::AddrEntry],
) -> Vec<(IpNet, String, IpNet)> {
    let mut out = Vec::new();
    for a in local {
        let subnet = a.net.trunc();
        // A host address (/32, /128) has no neighbours to redirect.
        if a.net.addr().is_loopback() || subnet.prefix_len() == subnet.max_prefix_len() {
            continue;
        }
        for lan in lans {
            if lan.contains(&subnet.network()) || subnet.contains(&lan.network()) {
                out.push((*lan, a.link.clone(), subnet));
            }
        }
    }
    out
}

/// The warning for LAN clients on the gateway's own subnet: the office router forwards
/// their packets back out the interface they came in on, so it sends them ICMP redirects,
/// and the PCs then use this host directly and keep it as next hop for minutes, also
/// after the router has been pointed at another gateway.
fn same_subnet_warning(found: &[(IpNet, String, IpNet)]) -> Option<String> {
    let first = found.first()?;
    let (lan, link, subnet) = first;
    Some(format!(
        "this gateway serves clients on its own subnet (--lan {lan}, {subnet} on {link}): the office router sends their cluster traffic back out the interface it came in on, so it also sends them ICMP redirects, and the PCs then send straight to this host and keep doing so for minutes after the router is pointed at another gateway (failover, maintenance). Fix one of: send_redirects=0 on the router's LAN interface (Linux: net.ipv4.conf.all.send_redirects=0 and net.ipv4.conf.<LAN interface>.send_redirects=0; Cisco IOS: `no ip redirects` on the interface; H3C: `undo ip redirects enable`; Huawei: `undo icmp redirect send`), a separate segment for the gateway, or a route to the cluster prefixes via this host on the PCs. `kubelan doctor --via GATEWAY` on a PC names a cached redirect."
    ))
}

/// `--mode node`.
async fn node(
    opts: GatewayOptions,
    lans: Vec<IpNet>,
    events: EventSink,
    stop: Stop,
) -> anyhow::Result<()> {
    let state = StateDir::from_env();
    state
        .ensure()
        .with_context(|| format!("state directory {}", state.path().display()))?;
    connect::clean_leftovers(&state, &events).await;
    events(Event::Discovering);
    let overrides = &opts.connect.overrides;
    let everything_given = !overrides.service_cidrs.is_empty()
        && !overrides.pod_cidrs.is_empty()
        && overrides.dns_server.is_some();
    let mut facts = if everything_given {
        // A gateway host without a kubeconfig.
        discovery::from_flags(overrides)
    } else {
        let cc = kubelan_cluster::connect(&opts.connect.kube).await?;
        discovery::discover(&cc, overrides).await?
    };
    if facts.cluster_domain.source == kubelan_cluster::Source::Default {
        // No agent in node mode to confirm it.
        facts.notes.retain(|n| !n.starts_with("cluster domain:"));
        facts.notes.push(format!(
            "cluster domain: assuming {}; pass --cluster-domain if the cluster uses another",
            facts.cluster_domain.value
        ));
    }
    for note in &facts.notes {
        events(Event::Note {
            message: note.clone(),
        });
    }
    let input = PlanInput {
        facts: &facts,
        local_routes: &[],
        local_addrs: &[],
        routes: &Default::default(),
        tun: TunSpec {
            name: opts.connect.tun.clone(),
            mtu: opts.connect.mtu,
        },
        mode: PlanMode::NodeGateway {
            lans: lans.clone(),
            snat: !opts.no_snat,
            no_dns: opts.connect.no_dns,
        },
    };
    let plan = plan::plan(&input).map_err(|e| connect::refuse(e, &events))?;
    for w in &plan.warnings {
        events(connect::warning_event(w));
    }
    let listen = dns_listen(&opts, &lans).await?;
    if !opts.connect.no_dns && plan.dns_missing {
        events(Event::NoClusterDnsForLan);
    }
    let sockets = match plan.dns {
        DnsChange::Lan(_) => Some(dnsrelay::bind_lan(listen).await?),
        _ => None,
    };

    // Host changes, each journalled first.
    let mut guard = HostGuard::begin(&state, "gateway")?;
    // Undoes the changes below if this process dies without doing so (kill -9, OOM).
    let _watcher = crate::watcher::start(&guard, &events);
    let setup = NodeSetup {
        facts,
        plan,
        sockets,
        listen,
    };
    let result = serve_node(setup, opts.live_summary, &events, stop, &mut guard).await;
    connect::restore(guard, &events).await;
    result
}

/// What a node gateway decided and prepared before its first host change.
struct NodeSetup {
    facts: ClusterFacts,
    plan: HostPlan,
    /// DNS sockets bound on the LAN address (when DNS is served).
    sockets: Option<dnsrelay::LanSockets>,
    /// The LAN address (DNS, and the office router's next hop).
    listen: SocketAddr,
}

/// Makes a node gateway's changes and serves its DNS until `stop` completes.
async fn serve_node(
    setup: NodeSetup,
    live_summary: bool,
    events: &EventSink,
    stop: Stop,
    guard: &mut HostGuard,
) -> anyhow::Result<()> {
    let NodeSetup {
        facts,
        plan,
        sockets,
        listen,
    } = setup;
    let shutdown = CancellationToken::new();
    for s in &plan.sysctls {
        let changed = kubelan_sys::sysctl::set(guard, &s.key, &s.value)?;
        events(Event::Forwarding { already: !changed });
    }
    for n in &plan.nft {
        if let NftChange::Gateway { lan, cluster, snat } = n {
            let rules = rules::GatewayRules {
                lan: lan.clone(),
                cluster: cluster.clone(),
                snat: *snat,
            };
            kubelan_sys::nft::create_table(guard, NfFamily::IP, TABLE, rules.objects()).await?;
            events(Event::Nft {
                table: TABLE.to_string(),
                snat: *snat,
                lan: lan.clone(),
                cluster: cluster.clone(),
            });
        }
    }

    let dns_stats = Arc::new(DnsStats::default());
    let mut dns_task = None;
    let mut lan_dns = None;
    if let (Some(sockets), DnsChange::Lan(lan)) = (sockets, &plan.dns)
        && let Some(dns_ip) = lan.cluster_dns
    {
        let domain = lan.domain.clone();
        let upstreams = dnsrelay::host_resolvers(
            Path::new(kubelan_sys::dns::DEFAULT_RESOLV_CONF),
            &[listen.ip()],
        )?;
        let relay = Arc::new(DnsRelay {
            zones: SplitZones::new(
                &domain,
                facts
                    .prefixes()
                    .map(|(_, f)| (f.value.addr(), f.value.prefix_len())),
            ),
            cluster: ClusterPath::Direct,
            cluster_dns: SocketAddr::new(dns_ip, 53),
            upstreams: upstreams.iter().map(|u| SocketAddr::new(*u, 53)).collect(),
            stats: dns_stats.clone(),
            failures: Default::default(),
        });
        // The LANs, and this host itself (its tools and `kubelan doctor` ask too).
        let mut allowed = lan.lans.clone();
        allowed.push(IpNet::from(listen.ip()));
        allowed.push("127.0.0.0/8".parse().unwrap_or(IpNet::from(listen.ip())));
        let lan = Arc::new(LanDns::new(relay, allowed));
        dns_task = Some(dnsrelay::serve_lan(sockets, lan.clone(), shutdown.clone()));
        lan_dns = Some(lan);
        events(Event::NodeDns {
            listen,
            domain,
            cluster_dns: dns_ip,
            upstreams,
        });
    }
    events(Event::NodeReady {
        listen: listen.ip(),
        domain: facts.cluster_domain.value.clone(),
    });

    let summary = tokio::spawn(summarise(
        events.clone(),
        live_summary,
        dns_stats,
        lan_dns,
        shutdown.clone(),
    ));
    stop.await;
    shutdown.cancel();
    let _ = summary.await;
    if let Some(t) = dns_task {
        let _ = t.await;
    }
    events(Event::Stopping);
    Ok(())
}

async fn read_summary(dns: &DnsStats, lan: Option<&LanDns>) -> Summary {
    let counters = kubelan_sys::nft::counters(NfFamily::IP, TABLE)
        .await
        .unwrap_or_default();
    let get = |name: &str| counters.get(name).copied().unwrap_or((0, 0));
    let nft_clients = kubelan_sys::nft::set_len(NfFamily::IP, TABLE, rules::CLIENTS)
        .await
        .unwrap_or(0);
    Summary {
        clients: nft_clients.max(lan.map_or(0, LanDns::clients_seen)),
        flows: get(rules::FLOWS).0,
        bytes_up: get(rules::UP).1,
        bytes_down: get(rules::DOWN).1,
        dns_cluster: dns.cluster.load(Ordering::Relaxed),
        dns_other: dns.upstream.load(Ordering::Relaxed),
        dns_refused: lan.map_or(0, |l| l.refused.load(Ordering::Relaxed)),
        dns_malformed: dns.malformed.load(Ordering::Relaxed),
    }
}

/// The running summary: with `live`, refreshed in place every 2 s; otherwise an event
/// every 30 s when something changed.
async fn summarise(
    events: EventSink,
    live: bool,
    dns: Arc<DnsStats>,
    lan: Option<Arc<LanDns>>,
    shutdown: CancellationToken,
) {
    let period = if live {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(30)
    };
    let mut last = Summary::default();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(period) => {}
        }
        let now = read_summary(&dns, lan.as_deref()).await;
        if live {
            events(Event::LiveSummary(now));
        } else if now != last {
            events(Event::Summary(now));
        }
        last = now;
    }
    if live {
        events(Event::LiveSummaryEnd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_lans_are_refused() {
        let nets = |v: &[&str]| v.iter().map(|s| s.parse().unwrap()).collect::<Vec<IpNet>>();
        assert!(checked_lans(&nets(&["172.16.0.0/18", "172.16.1.0/24"])).is_err());
        assert!(checked_lans(&nets(&["172.16.1.0/24", "172.16.0.0/18"])).is_err());
        assert!(checked_lans(&nets(&["172.16.0.0/18", "172.16.0.0/18"])).is_err());
        let ok = checked_lans(&nets(&["172.16.0.5/18", "192.168.1.0/24"])).unwrap();
        assert_eq!(ok[0].to_string(), "172.16.0.0/18");
    }

    #[test]
    fn clients_on_the_gateways_own_subnet_get_the_redirect_warning() {
        use kubelan_sys::net::AddrEntry;
        let addr = |link: &str, net: &str| AddrEntry {
            link: link.into(),
            net: net.parse().unwrap(),
        };
        let local = [
            addr("lo", "127.0.0.1/8"),
            addr("eth0", "172.16.1.12/18"),
            addr("kubelan0", "10.250.0.1/32"),
        ];
        let lan = |s: &str| vec![s.parse::<IpNet>().unwrap()];
        // The README's setup: the gateway is a PC of the LAN it serves.
        let found = lans_on_own_subnet(&lan("172.16.0.0/18"), &local);
        assert_eq!(found.len(), 1);
        let w = same_subnet_warning(&found).unwrap();
        assert!(
            w.starts_with(
                "this gateway serves clients on its own subnet (--lan 172.16.0.0/18, 172.16.0.0/18 on eth0): the office router"
            ),
            "{w}"
        );
        for fix in ["send_redirects=0", "separate segment", "on the PCs"] {
            assert!(w.contains(fix), "{fix}: {w}");
        }
        // A smaller or larger --lan around the same subnet is the same situation.
        assert_eq!(lans_on_own_subnet(&lan("172.16.1.0/24"), &local).len(), 1);
        assert_eq!(lans_on_own_subnet(&lan("172.16.0.0/12"), &local).len(), 1);
        // A gateway on another segment (a node, or a DMZ) is not warned about.
        assert!(lans_on_own_subnet(&lan("192.168.10.0/24"), &local).is_empty());
        assert!(lans_on_own_subnet(&lan("10.250.0.0/24"), &local).is_empty());
        assert!(same_subnet_warning(&[]).is_none());
    }
}
