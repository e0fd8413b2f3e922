//! The static-route and DNS formats.
//!
//! Every block starts with comment lines in the format's own comment syntax: what it does,
//! each cluster prefix with where it came from, and where to enter it; then exactly the
//! lines to enter, with no trailing comments, so a block can be pasted or saved as is.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::format::Format;
use crate::input::{RoutesInput, comment_text, valid_domain};
use crate::plan::{Plan, PrefixZones, Route, plan};
use crate::zones::locally_served_parent;

/// Lines of text.
#[derive(Default)]
pub(crate) struct Out(String);

impl Out {
    pub(crate) fn line(&mut self, s: impl AsRef<str>) {
        self.0.push_str(s.as_ref());
        self.0.push('\n');
    }

    pub(crate) fn into_string(self) -> String {
        self.0
    }
}

/// Renders `input` in `format`: the comment preamble and the lines to enter.
pub fn render(format: Format, input: &RoutesInput) -> String {
    let plan = plan(input);
    let mut out = Out::default();
    match format {
        Format::Linux => linux(&mut out, input, &plan),
        Format::Windows => windows(&mut out, input, &plan),
        Format::Macos => macos(&mut out, input, &plan),
        Format::CiscoIos => cisco(&mut out, input, &plan),
        Format::HuaweiVrp => vrp(&mut out, input, &plan, false),
        Format::H3cComware => vrp(&mut out, input, &plan, true),
        Format::Mikrotik => mikrotik(&mut out, input, &plan),
        Format::Junos => junos(&mut out, input, &plan),
        Format::Dnsmasq => dnsmasq(&mut out, input, &plan),
        Format::Bind => bind(&mut out, input, &plan),
        Format::Unbound => unbound(&mut out, input, &plan),
        Format::Coredns => coredns(&mut out, input, &plan),
        Format::WindowsDns => windows_dns(&mut out, input, &plan),
        Format::SystemdResolved => resolved(&mut out, input, &plan),
        Format::MikrotikDns => mikrotik_dns(&mut out, input, &plan),
    }
    out.into_string()
}

/// Comment text safe in a cmd.exe `REM` line as well.
fn cmd_safe(s: &str) -> String {
    comment_text(s)
        .chars()
        .map(|c| if "&|<>^%".contains(c) { ' ' } else { c })
        .collect()
}

/// `10.4.7.11` or `10.4.7.11 (IPv4) and fd00::11 (IPv6)`.
fn gateways(input: &RoutesInput) -> String {
    match (input.gateway_v4, input.gateway_v6) {
        (Some(a), Some(b)) => format!("{a} (IPv4) and {b} (IPv6)"),
        (Some(a), None) => a.to_string(),
        (None, Some(b)) => b.to_string(),
        (None, None) => "(none given)".into(),
    }
}

/// The preamble of a route format: what, each prefix and why, and `how`.
fn route_preamble(out: &mut Out, c: &str, input: &RoutesInput, plan: &Plan<'_>, how: &str) {
    let text = |s: &str| {
        if c == "REM" {
            cmd_safe(s)
        } else {
            comment_text(s)
        }
    };
    out.line(format!(
        "{c} kubelan: the cluster's Pod and Service networks via the kubelan gateway {}",
        gateways(input)
    ));
    let width = plan
        .routes
        .iter()
        .map(|r| r.net.to_string().len())
        .max()
        .unwrap_or(0);
    for r in &plan.routes {
        let guess = if r.prefix.guessed { " [guessed]" } else { "" };
        out.line(format!(
            "{c}   {:<width$}  {:<8}  {}{guess}",
            r.net.to_string(),
            r.prefix.kind.as_str(),
            text(&r.prefix.why),
        ));
    }
    for p in &plan.no_gateway {
        let family = if p.net.addr().is_ipv4() {
            "IPv4"
        } else {
            "IPv6"
        };
        out.line(format!(
            "{c}   {} left out: no {family} gateway address (pass --gateway with one)",
            p.net.trunc()
        ));
    }
    if plan.routes.is_empty() {
        out.line(format!("{c} nothing to route"));
    } else {
        out.line(format!("{c} {how}"));
    }
}

fn linux(out: &mut Out, input: &RoutesInput, plan: &Plan<'_>) {
    route_preamble(
        out,
        "#",
        input,
        plan,
        "as root; these routes are gone after a reboot, so also add them to the network configuration",
    );
    for r in &plan.routes {
        out.line(format!("ip route add {} via {} proto static", r.net, r.via));
    }
}

fn macos(out: &mut Out, input: &RoutesInput, plan: &Plan<'_>) {
    route_preamble(
        out,
        "#",
        input,
        plan,
        "as root (sudo); gone after a reboot (networksetup -setadditionalroutes keeps IPv4 ones)",
    );
    for r in &plan.routes {
        match r.net {
            IpNet::V4(n) => out.line(format!("route -n add -net {n} {}", r.via)),
            IpNet::V6(n) => out.line(format!("route -n add -inet6 {n} {}", r.via)),
        }
    }
}

fn windows(out: &mut Out, input: &RoutesInput, plan: &Plan<'_>) {
    route_preamble(
        out,
        "REM",
        input,
        plan,
        "in a Command Prompt run as Administrator; -p keeps the routes across reboots",
    );
    for r in &plan.routes {
        match r.net {
            IpNet::V4(n) => out.line(format!(
                "route -p ADD {} MASK {} {}",
                n.network(),
                n.netmask(),
                r.via
            )),
            IpNet::V6(n) => out.line(format!("route -p ADD {n} {}", r.via)),
        }
    }
}

/// `kubelan-pods` / `kubelan-services`: the route's name on routers that keep one.
fn route_name(r: &Route<'_>) -> String {
    format!("kubelan-{}", r.prefix.kind.as_str())
}

fn cisco(out: &mut Out, input: &RoutesInput, plan: &Plan<'_>) {
    let v6 = plan.routes.iter().any(|r| matches!(r.net, IpNet::V6(_)));
    route_preamble(
        out,
        "!",
        input,
        plan,
        if v6 {
            "in privileged EXEC mode (IPv6 routes need ipv6 unicast-routing)"
        } else {
            "in privileged EXEC mode"
        },
    );
    if plan.routes.is_empty() {
        return;
    }
    out.line("configure terminal");
    for r in &plan.routes {
        match r.net {
            IpNet::V4(n) => out.line(format!(
                "ip route {} {} {} name {}",
                n.network(),
                n.netmask(),
                r.via,
                route_name(r)
            )),
            IpNet::V6(n) => out.line(format!("ipv6 route {n} {} name {}", r.via, route_name(r))),
        }
    }
    out.line("end");
    out.line("write memory");
}

/// Huawei VRP and H3C Comware share the `ip route-static` syntax.
fn vrp(out: &mut Out, input: &RoutesInput, plan: &Plan<'_>, h3c: bool) {
    route_preamble(
        out,
        "#",
        input,
        plan,
        if h3c {
            "in user view; save asks to confirm (Y)"
        } else {
            "in user view; save asks to confirm (y)"
        },
    );
    if plan.routes.is_empty() {
        return;
    }
    out.line("system-view");
    for r in &plan.routes {
        match r.net {
            IpNet::V4(n) => out.line(format!(
                "ip route-static {} {} {} description {}",
                n.network(),
                n.netmask(),
                r.via,
                route_name(r)
            )),
            IpNet::V6(n) => out.line(format!(
                "ipv6 route-static {} {} {} description {}",
                n.network(),
                n.prefix_len(),
                r.via,
                route_name(r)
            )),
        }
    }
    out.line("return");
    out.line("save");
}

fn mikrotik(out: &mut Out, input: &RoutesInput, plan: &Plan<'_>) {
    route_preamble(out, "#", input, plan, "in a RouterOS terminal (v6 and v7)");
    for r in &plan.routes {
        let menu = match r.net {
            IpNet::V4(_) => "/ip route",
            IpNet::V6(_) => "/ipv6 route",
        };
        out.line(format!(
            "{menu} add dst-address={} gateway={} comment=\"kubelan {}\"",
            r.net,
            r.via,
            r.prefix.kind.as_str()
        ));
    }
}

fn junos(out: &mut Out, input: &RoutesInput, plan: &Plan<'_>) {
    route_preamble(out, "#", input, plan, "in operational mode");
    if plan.routes.is_empty() {
        return;
    }
    out.line("configure");
    for r in &plan.routes {
        match r.net {
            IpNet::V4(n) => out.line(format!(
                "set routing-options static route {n} next-hop {}",
                r.via
            )),
            IpNet::V6(n) => out.line(format!(
                "set routing-options rib inet6.0 static route {n} next-hop {}",
                r.via
            )),
        }
    }
    out.line("commit and-quit");
}

/// What the DNS formats forward, or why they print nothing.
struct DnsPlan<'p, 'a> {
    server: IpAddr,
    /// The cluster domain, when valid.
    domain: Option<String>,
    zones: &'p [PrefixZones<'a>],
}

/// The preamble of a DNS format; `None` when there is nothing to forward to.
fn dns_preamble<'p, 'a>(
    out: &mut Out,
    c: &str,
    input: &RoutesInput,
    plan: &'p Plan<'a>,
    how: &str,
) -> Option<DnsPlan<'p, 'a>> {
    let Some(server) = input.dns_server() else {
        out.line(format!(
            "{c} kubelan: no DNS server to forward to (pass --gateway, or --dns-target)"
        ));
        return None;
    };
    let domain = input.domain();
    let domain = valid_domain(&domain).then_some(domain);
    let what = match &domain {
        Some(d) => format!("names in {d} and reverse lookups of the cluster's networks"),
        None => "reverse lookups of the cluster's networks".to_string(),
    };
    let gateway = [
        input.gateway_v4.map(IpAddr::V4),
        input.gateway_v6.map(IpAddr::V6),
    ]
    .contains(&Some(server));
    let to = if gateway {
        format!("{server}, the kubelan gateway (it answers DNS there)")
    } else {
        server.to_string()
    };
    out.line(format!("{c} kubelan: {what}, forwarded to {to}"));
    if domain.is_none() {
        out.line(format!(
            "{c} the cluster domain {:?} is left out: not a valid DNS name (pass --cluster-domain)",
            comment_text(&input.cluster_domain)
        ));
    }
    out.line(format!("{c} {how}"));
    Some(DnsPlan {
        server,
        domain,
        zones: &plan.zones,
    })
}

/// `services 172.17.16.0/20`, plus a note when its zone is wider than the prefix.
fn zone_comment(pz: &PrefixZones<'_>) -> String {
    let net = pz.prefix.net.trunc();
    let mut s = format!("reverse lookups of {} {net}", pz.prefix.kind);
    if !pz.exact
        && let Some(z) = pz.zones.first()
    {
        s.push_str(&format!(
            " (its zone {} covers {}, more than the prefix)",
            z.name, z.net
        ));
    }
    s
}

fn dnsmasq(out: &mut Out, input: &RoutesInput, plan: &Plan<'_>) {
    let Some(d) = dns_preamble(
        out,
        "#",
        input,
        plan,
        "e.g. as /etc/dnsmasq.d/kubelan.conf, then restart dnsmasq",
    ) else {
        return;
    };
    if let Some(domain) = &d.domain {
        out.line(format!("server=/{domain}/{}", d.server));
        out.line("# the answers are private addresses: keep them when stop-dns-rebind is on");
        out.line(format!("rebind-domain-ok=/{domain}/"));
    }
    for pz in d.zones {
        out.line(format!("# {}", zone_comment(pz)));
        for z in &pz.zones {
            out.line(format!("server=/{}/{}", z.name, d.server));
        }
    }
}

fn bind(out: &mut Out, input: &RoutesInput, plan: &Plan<'_>) {
    let Some(d) = dns_preamble(
        out,
        "//",
        input,
        plan,
        "in named.conf (Debian: named.conf.local), then: named-checkconf && rndc reconfig",
    ) else {
        return;
    };
    let empty = empty_zones(&d);
    if d.domain.is_some() || !empty.is_empty() {
        out.line("// and inside options { }:");
    }
    if let Some(domain) = &d.domain {
        out.line(format!(
            "//     validate-except {{ \"{domain}\"; }};   (BIND 9.14 or later; with DNSSEC validation on, {domain} answers fail without it)"
        ));
    }
    for e in &empty {
        out.line(format!(
            "//     disable-empty-zone \"{e}\";   (BIND answers this private zone itself otherwise)"
        ));
    }
    let zone = |name: &str| {
        format!(
            "zone \"{name}\" {{ type forward; forward only; forwarders {{ {}; }}; }};",
            d.server
        )
    };
    if let Some(domain) = &d.domain {
        out.line(zone(domain));
    }
    for pz in d.zones {
        out.line(format!("// {}", zone_comment(pz)));
        for z in &pz.zones {
            out.line(zone(&z.name));
        }
    }
}

/// The locally served zones (RFC 6303) that hold the reverse zones, without duplicates.
fn empty_zones(d: &DnsPlan<'_, '_>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for z in d.zones.iter().flat_map(|pz| pz.zones.iter()) {
        if let Some(p) = locally_served_parent(z)
            && !out.contains(&p.name)
        {
            out.push(p.name);
        }
    }
    out
}

fn unbound(out: &mut Out, input: &RoutesInput, plan: &Plan<'_>) {
    let Some(d) = dns_preamble(
        out,
        "#",
        input,
        plan,
        "e.g. as /etc/unbound/unbound.conf.d/kubelan.conf, then: unbound-checkconf && unbound-control reload",
    ) else {
        return;
    };
    let private: Vec<&str> = d
        .zones
        .iter()
        .flat_map(|pz| pz.zones.iter())
        .filter(|z| locally_served_parent(z).is_some())
        .map(|z| z.name.as_str())
        .collect();
    if d.domain.is_some() || !private.is_empty() {
        out.line("server:");
    }
    if let Some(domain) = &d.domain {
        out.line(format!(
            "    # {domain} is not in the public DNS: no DNSSEC there; its answers are private addresses"
        ));
        out.line(format!("    domain-insecure: \"{domain}\""));
        out.line(format!("    private-domain: \"{domain}\""));
    }
    if !private.is_empty() {
        out.line(
            "    # Unbound answers private reverse zones itself (RFC 6303); let these through",
        );
        for z in &private {
            out.line(format!("    local-zone: \"{z}\" transparent"));
        }
    }
    let zone = |out: &mut Out, name: &str| {
        out.line("forward-zone:");
        out.line(format!("    name: \"{name}\""));
        out.line(format!("    forward-addr: {}", d.server));
    };
    if let Some(domain) = &d.domain {
        zone(out, domain);
    }
    for pz in d.zones {
        out.line(format!("# {}", zone_comment(pz)));
        for z in &pz.zones {
            zone(out, &z.name);
        }
    }
}

fn coredns(out: &mut Out, input: &RoutesInput, plan: &Plan<'_>) {
    let Some(d) = dns_preamble(
        out,
        "#",
        input,
        plan,
        "add this server block to the Corefile (no other block may name these zones), then reload CoreDNS",
    ) else {
        return;
    };
    for pz in d.zones {
        out.line(format!("# {}", zone_comment(pz)));
    }
    let keys: Vec<&str> = d
        .domain
        .iter()
        .map(String::as_str)
        .chain(
            d.zones
                .iter()
                .flat_map(|pz| pz.zones.iter().map(|z| z.name.as_str())),
        )
        .collect();
    if keys.is_empty() {
        return;
    }
    out.line(format!("{} {{", keys.join(" ")));
    out.line(format!("    forward . {}", d.server));
    out.line("    cache 30");
    out.line("}");
}

fn windows_dns(out: &mut Out, input: &RoutesInput, plan: &Plan<'_>) {
    let Some(d) = dns_preamble(
        out,
        "#",
        input,
        plan,
        "in PowerShell as Administrator on the DNS server; add -ReplicationScope Forest to keep the zones in Active Directory",
    ) else {
        return;
    };
    let zone = |name: &str| {
        format!(
            "Add-DnsServerConditionalForwarderZone -Name \"{name}\" -MasterServers {}",
            d.server
        )
    };
    if let Some(domain) = &d.domain {
        out.line(zone(domain));
    }
    for pz in d.zones {
        out.line(format!("# {}", zone_comment(pz)));
        for z in &pz.zones {
            out.line(zone(&z.name));
        }
    }
}

fn resolved(out: &mut Out, input: &RoutesInput, plan: &Plan<'_>) {
    let Some(d) = dns_preamble(
        out,
        "#",
        input,
        plan,
        "as /etc/systemd/resolved.conf.d/kubelan.conf, then: systemctl restart systemd-resolved",
    ) else {
        return;
    };
    out.line(
        "# resolved may also ask a global DNS= server for other names; a kubelan gateway relays those to its own resolvers",
    );
    for pz in d.zones {
        out.line(format!("# {}", zone_comment(pz)));
    }
    let domains: Vec<String> = d
        .domain
        .iter()
        .cloned()
        .chain(
            d.zones
                .iter()
                .flat_map(|pz| pz.zones.iter().map(|z| z.name.clone())),
        )
        .map(|z| format!("~{z}"))
        .collect();
    if domains.is_empty() {
        // Without routing domains the server would become a resolver for every name.
        out.line("# nothing to forward");
        return;
    }
    out.line("[Resolve]");
    out.line(format!("DNS={}", d.server));
    out.line(format!("Domains={}", domains.join(" ")));
}

fn mikrotik_dns(out: &mut Out, input: &RoutesInput, plan: &Plan<'_>) {
    let Some(d) = dns_preamble(
        out,
        "#",
        input,
        plan,
        "in a RouterOS v7 terminal (FWD entries); LAN clients must use the router as DNS server",
    ) else {
        return;
    };
    let zone = |name: &str| {
        format!(
            "/ip dns static add name={name} type=FWD forward-to={} match-subdomain=yes comment=\"kubelan\"",
            d.server
        )
    };
    if let Some(domain) = &d.domain {
        out.line(zone(domain));
    }
    for pz in d.zones {
        out.line(format!("# {}", zone_comment(pz)));
        for z in &pz.zones {
            out.line(zone(&z.name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::{ClusterPrefix, PrefixKind};

    fn input() -> RoutesInput {
        RoutesInput {
            prefixes: vec![
                ClusterPrefix::new(
                    "172.17.16.0/20".parse().unwrap(),
                    PrefixKind::Services,
                    "ServiceCIDR \"kubernetes\"",
                ),
                ClusterPrefix::new(
                    "10.42.0.0/17".parse().unwrap(),
                    PrefixKind::Pods,
                    "--pod-cidr flag",
                ),
            ],
            gateway_v4: Some("10.4.7.11".parse().unwrap()),
            cluster_domain: "cluster.local".into(),
            ..RoutesInput::default()
        }
    }

    #[test]
    fn netmasks_are_exact() {
        let out = render(Format::CiscoIos, &input());
        assert!(
            out.contains("ip route 172.17.16.0 255.255.240.0 10.4.7.11 name kubelan-services\n")
        );
        assert!(out.contains("ip route 10.42.0.0 255.255.128.0 10.4.7.11 name kubelan-pods\n"));
        let out = render(Format::Windows, &input());
        assert!(out.contains("route -p ADD 10.42.0.0 MASK 255.255.128.0 10.4.7.11\n"));
        let out = render(Format::HuaweiVrp, &input());
        assert!(out.contains(
            "ip route-static 172.17.16.0 255.255.240.0 10.4.7.11 description kubelan-services\n"
        ));
        // Every length maps to the mask with that many leading ones.
        for len in 0..=32u8 {
            let net: IpNet = format!("10.0.0.0/{len}").parse().unwrap();
            let IpNet::V4(n) = net.trunc() else {
                unreachable!()
            };
            let mask = u32::from(n.netmask());
            assert_eq!(mask.leading_ones(), u32::from(len));
            assert_eq!(mask.count_ones(), u32::from(len));
        }
    }

    #[test]
    fn wide_reverse_zone_is_said() {
        let out = render(Format::Dnsmasq, &input());
        assert!(
            out.contains("# reverse lookups of pods 10.42.0.0/17 (its zone 42.10.in-addr.arpa covers 10.42.0.0/16, more than the prefix)\nserver=/42.10.in-addr.arpa/10.4.7.11\n"),
            "{out}"
        );
    }

    #[test]
    fn nothing_to_forward_to() {
        let mut i = input();
        i.gateway_v4 = None;
        for f in Format::all() {
            let out = render(*f, &i);
            assert!(!out.is_empty());
            assert!(
                out.lines().all(|l| l.starts_with('#')
                    || l.starts_with('!')
                    || l.starts_with("REM")
                    || l.starts_with("//")),
                "{f}: {out}"
            );
        }
    }

    #[test]
    fn a_bad_domain_is_left_out() {
        let mut i = input();
        i.cluster_domain = "cluster.local\"; }; zone \"evil".into();
        for f in Format::all()
            .iter()
            .filter(|f| f.kind() == crate::FormatKind::Dns)
        {
            let out = render(*f, &i);
            assert!(
                out.lines()
                    .filter(|l| !l.starts_with('#') && !l.starts_with("//"))
                    .all(|l| !l.contains("evil")),
                "{f}: {out}"
            );
        }
    }
}
