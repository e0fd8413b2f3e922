//! This host's side of the path: its routes to the cluster prefixes and the ICMP
//! redirects it keeps, a node-mode gateway's forwarding, SNAT rule and counters, the
//! address its DNS listens on, and the path MTU to a pod.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use kubelan_cluster::discovery::{ClusterFacts, PrefixKind};
use kubelan_sys::net::RouteEntry;
use nftables::types::NfFamily;

#[cfg(test)]
use crate::Check;
use crate::{Report, Verdict};

/// The route this host uses for each cluster prefix (the longest main-table match of its
/// first address): a line each, `Info`, or `Warn` without a route unless on a LAN host
/// (`via`), where the router is expected to carry it.
pub(crate) fn route_findings(
    routes: &[RouteEntry],
    prefixes: &[(PrefixKind, IpNet)],
    via: Option<IpAddr>,
) -> Vec<(Verdict, String)> {
    let mut out = Vec::new();
    for (kind, net) in prefixes {
        let probe = net.hosts().next().unwrap_or(net.addr());
        let best = routes
            .iter()
            .filter(|rt| rt.table == 254 && rt.dst.contains(&probe))
            .max_by_key(|rt| rt.dst.prefix_len());
        let what = match best {
            None => {
                out.push((
                    if via.is_some() {
                        Verdict::Info
                    } else {
                        Verdict::Warn
                    },
                    format!("{kind} {net}: no route on this host"),
                ));
                continue;
            }
            Some(rt) if rt.dst.prefix_len() == 0 => format!(
                "{kind} {net}: to the default gateway {}{}",
                rt.gateway.map(|g| g.to_string()).unwrap_or_default(),
                match via {
                    Some(_) =>
                        " (fine: that router must route it to the gateway; the probes below tell)",
                    None =>
                        " (fine on a node for Services — kube-proxy catches them — else the probes below tell)",
                }
            ),
            Some(rt) => format!(
                "{kind} {net}: via {} {}",
                rt.dev.clone().unwrap_or_default(),
                rt.gateway
                    .map(|g| format!("gateway {g}"))
                    .unwrap_or_default()
            ),
        };
        out.push((Verdict::Info, what));
    }
    out
}

/// How to stop routers from redirecting LAN hosts to a gateway on their own subnet.
const REDIRECT_FIX: &str = "set send_redirects=0 on the office router's LAN interface (Linux: `sysctl -w net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.<LAN interface>.send_redirects=0`; Cisco IOS: `no ip redirects` on the interface; H3C: `undo ip redirects enable`; Huawei: `undo icmp redirect send`), put the gateway on a segment of its own, or route the cluster prefixes to the gateway on the PCs themselves";

/// Findings about next hops this host learned from ICMP redirects, for destinations inside
/// the cluster prefixes: one per redirected next hop. `table_gateway` is the routing
/// table's next hop for an address; `via` the gateway the user expects (`--via`).
pub(crate) fn redirect_findings(
    redirects: &[kubelan_sys::net::Redirect],
    prefixes: &[IpNet],
    table_gateway: &dyn Fn(IpAddr) -> Option<IpAddr>,
    via: Option<IpAddr>,
) -> Vec<(Verdict, String, String)> {
    // Next hop → (destinations, routing table's next hops, longest expiry).
    let mut by_hop: BTreeMap<IpAddr, (Vec<IpAddr>, Vec<IpAddr>, u32)> = BTreeMap::new();
    for rd in redirects {
        if !prefixes.iter().any(|p| p.contains(&rd.dst)) {
            continue;
        }
        let e = by_hop.entry(rd.gateway).or_default();
        e.0.push(rd.dst);
        if let Some(t) = table_gateway(rd.dst).filter(|t| *t != rd.gateway && !e.1.contains(t)) {
            e.1.push(t);
        }
        e.2 = e.2.max(rd.expires_secs);
    }
    by_hop
        .into_iter()
        .map(|(hop, (mut dsts, table, secs))| {
            dsts.sort();
            let n = dsts.len();
            let mut list: Vec<String> = dsts.iter().take(4).map(IpAddr::to_string).collect();
            if n > 4 {
                list.push(format!("and {} more", n - 4));
            }
            let router = if table.is_empty() {
                "the routing table's next hop".to_string()
            } else {
                table.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(", ")
            };
            let what = format!(
                "cached ICMP redirect: {} {} straight to {hop} instead of through {router}, for up to {secs} s more",
                list.join(", "),
                if n == 1 { "goes" } else { "go" },
            );
            match via {
                Some(gw) if gw == hop => (
                    Verdict::Warn,
                    format!("{what}; that is the gateway, so it works now, but this host keeps using it for minutes after the router moves to another gateway"),
                    format!("to stop the router's redirects: {REDIRECT_FIX}"),
                ),
                Some(gw) => (
                    Verdict::Fail,
                    format!("{what}, not to the gateway {gw}: the router once redirected this host to a gateway on its own subnet and the host still uses that one"),
                    format!("`sudo ip route flush cache` on this host forgets it now; for good, {REDIRECT_FIX}"),
                ),
                None => (
                    Verdict::Warn,
                    format!("{what}: a router redirected this host to a gateway on its own subnet, and the host keeps that next hop even after the router changes"),
                    format!("`sudo ip route flush cache` forgets it; for good, {REDIRECT_FIX}"),
                ),
            }
        })
        .collect()
}

pub(crate) async fn check_routes(r: &mut Report<'_>, facts: &ClusterFacts, via: Option<IpAddr>) {
    let routes = match kubelan_sys::net::routes().await {
        Ok(routes) => routes,
        Err(e) => {
            r.add(
                "routes",
                Verdict::Skip,
                format!("cannot read routes: {e}"),
                None,
            );
            return;
        }
    };
    let prefixes: Vec<(PrefixKind, IpNet)> = facts.prefixes().map(|(k, f)| (k, f.value)).collect();
    for (verdict, what) in route_findings(&routes, &prefixes, via) {
        r.add("routes", verdict, what, None);
    }
    // A router that forwards a packet back out the interface it came in on tells the
    // sender (ICMP redirect) to use the next hop directly, and Linux hosts keep that for
    // minutes (`ip route show cache` marks it `<redirected>`): the route above is then not
    // the one in use.
    let redirects = match kubelan_sys::net::redirects().await {
        Ok(v) => v,
        Err(e) => {
            r.add(
                "routes",
                Verdict::Skip,
                format!("cannot read cached redirects: {e}"),
                None,
            );
            return;
        }
    };
    let prefixes: Vec<IpNet> = prefixes.into_iter().map(|(_, p)| p).collect();
    let table_gateway = |dst: IpAddr| {
        routes
            .iter()
            .filter(|rt| rt.table == 254 && rt.dst.contains(&dst))
            .max_by_key(|rt| rt.dst.prefix_len())
            .and_then(|rt| rt.gateway)
    };
    for (verdict, what, fix) in redirect_findings(&redirects, &prefixes, &table_gateway, via) {
        r.add("routes", verdict, what, Some(fix));
    }
}

/// Forwarding and the SNAT rule of a node-mode gateway on this host; returns its counters
/// and whether it masquerades.
pub(crate) async fn check_gateway(
    r: &mut Report<'_>,
    table: &str,
) -> (Option<BTreeMap<String, (u64, u64)>>, bool) {
    match kubelan_sys::sysctl::get("net.ipv4.ip_forward") {
        Ok(v) if v == "1" => r.add(
            "forwarding",
            Verdict::Pass,
            "IPv4 forwarding is on".into(),
            None,
        ),
        Ok(v) => r.add(
            "forwarding",
            Verdict::Fail,
            format!("IPv4 forwarding is off (net.ipv4.ip_forward = {v})"),
            Some(
                "restart `kubelan gateway` (it turns it on), or something turned it off since"
                    .into(),
            ),
        ),
        Err(e) => r.add("forwarding", Verdict::Skip, e.to_string(), None),
    }
    let snat = kubelan_sys::nft::chain_masquerades(NfFamily::IP, table, "postrouting")
        .await
        .unwrap_or(false);
    if snat {
        r.add(
            "snat",
            Verdict::Pass,
            format!("SNAT rule present in table ip {table}"),
            None,
        );
    } else {
        r.add(
            "snat",
            Verdict::Info,
            "no SNAT (--no-snat): pods see LAN addresses, so every node needs a route back to the LAN; the return-path check below tells".into(),
            None,
        );
    }
    let Ok(counters) = kubelan_sys::nft::counters(NfFamily::IP, table).await else {
        return (None, snat);
    };
    let (p, b) = counters.get("up").copied().unwrap_or((0, 0));
    let (sp, _) = counters.get("snat").copied().unwrap_or((0, 0));
    r.add(
        "counters",
        Verdict::Info,
        format!("so far: {p} packets ({b} bytes) LAN → cluster, {sp} connections masqueraded"),
        None,
    );
    (Some(counters), snat)
}

/// The DNS address a local node-mode gateway serves on: it is this host's address towards
/// the LAN, which the gateway printed; we take the address its DNS socket is bound to.
pub(crate) async fn gateway_dns_listen() -> Option<IpAddr> {
    dns_listener_in(&std::fs::read_to_string("/proc/net/udp").ok()?)
}

/// The first UDP socket on port 53 of a `/proc/net/udp` text bound to an address that is
/// neither loopback nor unspecified.
pub(crate) fn dns_listener_in(text: &str) -> Option<IpAddr> {
    // Local address column: hex IP:port in host byte order for IPv4.
    text.lines().skip(1).find_map(|l| {
        let local = l.split_whitespace().nth(1)?;
        let (ip, port) = local.split_once(':')?;
        if u16::from_str_radix(port, 16).ok()? != 53 {
            return None;
        }
        let raw = u32::from_str_radix(ip, 16).ok()?;
        let ip = std::net::Ipv4Addr::from(raw.swap_bytes());
        (!ip.is_loopback() && !ip.is_unspecified()).then_some(IpAddr::V4(ip))
    })
}

/// Large packets with "don't fragment" to a pod (needs the `ping` program).
pub(crate) async fn check_mtu(r: &mut Report<'_>, pod: Option<IpAddr>) {
    let Some(pod) = pod else {
        r.add("mtu", Verdict::Skip, "no pod to ping".into(), None);
        return;
    };
    mtu_with(r, pod, |size| {
        kubelan_sys::net::ping_unfragmented(pod, size)
    })
    .await;
}

/// The MTU check with `ping(payload)` saying whether an unfragmented echo of that size
/// was answered: a small one first, then 1500-, 1400- and 1280-byte packets.
async fn mtu_with<F, Fut>(r: &mut Report<'_>, pod: IpAddr, ping: F)
where
    F: Fn(u32) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<bool>>,
{
    match ping(56).await {
        Err(_) => {
            r.add(
                "mtu",
                Verdict::Skip,
                "the ping program is not installed".into(),
                None,
            );
            return;
        }
        Ok(false) => {
            r.add(
                "mtu",
                Verdict::Skip,
                format!("{pod} does not answer pings; MTU not checked"),
                None,
            );
            return;
        }
        Ok(true) => {}
    }
    for (size, packet) in [(1472u32, 1500u32), (1372, 1400), (1252, 1280)] {
        if ping(size).await.unwrap_or(false) {
            r.add(
                "mtu",
                if packet == 1500 {
                    Verdict::Pass
                } else {
                    Verdict::Warn
                },
                format!("{packet}-byte packets reach {pod} unfragmented"),
                (packet < 1500).then(|| {
                    "the path's MTU is below 1500: make sure TCP MSS clamping or PMTU discovery works (ICMP 'fragmentation needed' must not be filtered)".to_string()
                }),
            );
            return;
        }
    }
    r.add(
        "mtu",
        Verdict::Fail,
        format!("small pings reach {pod} but 1280-byte packets do not"),
        Some("a link on the path has a tiny MTU or ICMP 'fragmentation needed' is filtered; lower the MTU on the gateway (--mtu in tunnel mode)".into()),
    );
}

/// This host's address towards the cluster: the source the kernel picks for a cluster
/// address (a connected UDP socket sends nothing).
pub(crate) fn own_address_towards(dst: IpAddr) -> Option<IpAddr> {
    let bind: SocketAddr = if dst.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = std::net::UdpSocket::bind(bind).ok()?;
    s.connect(SocketAddr::new(dst, 9)).ok()?;
    Some(s.local_addr().ok()?.ip()).filter(|ip| !ip.is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubelan_sys::net::{Redirect, RouteKind};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn redirect(dst: &str, gw: &str, secs: u32) -> Redirect {
        Redirect {
            dst: ip(dst),
            gateway: ip(gw),
            dev: Some("eth0".into()),
            expires_secs: secs,
        }
    }

    #[test]
    fn a_redirect_to_an_old_gateway_fails_and_names_it() {
        let redirects = [
            redirect("172.17.32.2", "172.16.1.12", 280),
            redirect("172.17.33.4", "172.16.1.12", 290),
            // Outside the cluster prefixes: not ours to judge.
            redirect("192.0.2.7", "172.16.1.12", 100),
        ];
        let prefixes = ["172.17.32.0/19".parse().unwrap()];
        let table = |_: IpAddr| Some(ip("172.16.0.1"));
        let f = redirect_findings(&redirects, &prefixes, &table, Some(ip("172.16.1.30")));
        assert_eq!(f.len(), 1, "{f:?}");
        let (verdict, what, fix) = &f[0];
        assert_eq!(*verdict, Verdict::Fail);
        assert_eq!(
            what,
            "cached ICMP redirect: 172.17.32.2, 172.17.33.4 go straight to 172.16.1.12 instead of through 172.16.0.1, for up to 290 s more, not to the gateway 172.16.1.30: the router once redirected this host to a gateway on its own subnet and the host still uses that one"
        );
        assert!(fix.contains("ip route flush cache"), "{fix}");
        assert!(fix.contains("send_redirects=0"), "{fix}");
        assert!(
            fix.contains("segment") && fix.contains("on the PCs"),
            "{fix}"
        );
    }

    #[test]
    fn a_redirect_to_the_gateway_itself_is_a_warning() {
        let redirects = [redirect("172.17.32.2", "172.16.1.12", 30)];
        let prefixes = ["172.17.32.0/19".parse().unwrap()];
        let table = |_: IpAddr| Some(ip("172.16.0.1"));
        let f = redirect_findings(&redirects, &prefixes, &table, Some(ip("172.16.1.12")));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].0, Verdict::Warn);
        assert!(
            f[0].1.contains("minutes after the router moves"),
            "{}",
            f[0].1
        );
        let none = redirect_findings(&[], &prefixes, &table, Some(ip("172.16.1.12")));
        assert!(none.is_empty());
    }

    fn route(dst: &str, gw: Option<&str>, dev: &str, table: u32) -> RouteEntry {
        RouteEntry {
            dst: dst.parse().unwrap(),
            dev: Some(dev.into()),
            gateway: gw.map(ip),
            table,
            protocol: 4,
            kind: RouteKind::Unicast,
            metric: None,
        }
    }

    #[test]
    fn each_prefix_names_the_route_this_host_uses() {
        let routes = [
            route("0.0.0.0/0", Some("10.4.7.254"), "eth0", 254),
            route("172.17.32.0/19", None, "kubelan0", 254),
            // Another table does not count.
            route("172.17.16.0/20", Some("10.9.9.9"), "eth9", 100),
        ];
        let prefixes = [
            (PrefixKind::Services, "172.17.16.0/20".parse().unwrap()),
            (PrefixKind::Pods, "172.17.32.0/19".parse().unwrap()),
        ];
        let f = route_findings(&routes, &prefixes, None);
        assert_eq!(
            f,
            [
                (
                    Verdict::Info,
                    "services 172.17.16.0/20: to the default gateway 10.4.7.254 (fine on a node for Services — kube-proxy catches them — else the probes below tell)".to_string()
                ),
                (
                    Verdict::Info,
                    "pods 172.17.32.0/19: via kubelan0 ".to_string()
                ),
            ]
        );
        let f = route_findings(&routes[1..], &prefixes, None);
        assert_eq!(
            f[0],
            (
                Verdict::Warn,
                "services 172.17.16.0/20: no route on this host".to_string()
            )
        );
        // A LAN host leaves routing to its router.
        let f = route_findings(&routes[1..], &prefixes, Some(ip("10.4.7.11")));
        assert_eq!(f[0].0, Verdict::Info);
    }

    async fn mtu(answers: &'static [(u32, bool)], installed: bool) -> Vec<Check> {
        let on_check = |_: &Check| {};
        let mut r = Report {
            checks: Vec::new(),
            on_check: &on_check,
        };
        mtu_with(&mut r, ip("172.17.32.9"), |size| async move {
            if !installed {
                return Err(std::io::Error::from(std::io::ErrorKind::NotFound));
            }
            Ok(answers.iter().any(|(s, ok)| *s == size && *ok))
        })
        .await;
        r.outcome().checks
    }

    #[tokio::test]
    async fn the_mtu_is_the_largest_packet_that_passes_unfragmented() {
        let c = mtu(&[(56, true), (1472, true)], true).await;
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].verdict, Verdict::Pass);
        assert_eq!(
            c[0].what,
            "1500-byte packets reach 172.17.32.9 unfragmented"
        );
        let c = mtu(&[(56, true), (1372, true)], true).await;
        assert_eq!(c[0].verdict, Verdict::Warn);
        assert!(c[0].what.starts_with("1400-byte"), "{}", c[0].what);
        assert!(c[0].fix.as_deref().unwrap().contains("MSS clamping"));
        let c = mtu(&[(56, true)], true).await;
        assert_eq!(c[0].verdict, Verdict::Fail);
        let c = mtu(&[], true).await;
        assert_eq!(
            (c[0].verdict, c[0].what.as_str()),
            (
                Verdict::Skip,
                "172.17.32.9 does not answer pings; MTU not checked"
            )
        );
        let c = mtu(&[], false).await;
        assert_eq!(c[0].what, "the ping program is not installed");
    }

    #[test]
    fn the_gateways_dns_socket_is_found_in_proc_net_udp() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  1: 0100007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0 0
  2: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0 0
  3: 0B07040A:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0 0
  4: 0B07040A:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0 0
";
        assert_eq!(dns_listener_in(text), Some(ip("10.4.7.11")));
        assert_eq!(dns_listener_in(&text[..text.find("  4:").unwrap()]), None);
        assert_eq!(
            dns_listener_in("garbage\n 1: zz:0035\n 2: 0B07040A\n"),
            None
        );
    }
}
