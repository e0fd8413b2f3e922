//! How `connect` and `gateway` events look: a line for people on stderr, or one JSON
//! object per line on stdout (`--output json`, with `event` and `time` added).

use std::net::IpAddr;
use std::sync::Arc;

use kubelan_session::SessionState;
use kubelan_vpn::event::{Event, EventSink};
use serde_json::{Value, json};

use crate::bootstrap::state_line;

/// Where a rendered event goes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Rendered {
    /// An event: `human` on stderr, or `fields` (plus `event` and `time`) on stdout.
    Event {
        /// The JSON `event` field.
        name: &'static str,
        /// The JSON object.
        fields: Value,
        /// The line(s) for people.
        human: String,
    },
    /// A line on stderr whatever the output format.
    Stderr(String),
    /// A line on stdout whatever the output format.
    Stdout(String),
    /// Text on stderr without a newline (a line refreshed in place).
    InPlace(String),
}

fn event(name: &'static str, fields: Value, human: String) -> Rendered {
    Rendered::Event {
        name,
        fields,
        human,
    }
}

fn warning(json_message: String, human: String) -> Rendered {
    event(
        "warning",
        json!({"message": json_message}),
        format!("  warning: {human}"),
    )
}

fn joined<T: ToString>(v: &[T], sep: &str) -> String {
    v.iter().map(T::to_string).collect::<Vec<_>>().join(sep)
}

/// Where other names go, for a gateway's DNS line.
fn lan_upstreams(upstreams: &[IpAddr]) -> String {
    if upstreams.is_empty() {
        "nowhere (this host has no resolver): SERVFAIL".to_string()
    } else {
        joined(upstreams, ", ")
    }
}

/// The session state's JSON name.
fn state_name(state: &SessionState) -> &'static str {
    match state {
        SessionState::Connecting => "connecting",
        SessionState::Connected { .. } => "connected",
        SessionState::Reconnecting { .. } => "reconnecting",
        SessionState::Failed(_) => "failed",
    }
}

/// How `e` is shown.
pub(crate) fn render(e: &Event) -> Rendered {
    match e {
        Event::Cleanup { message } => event(
            "cleanup",
            json!({"message": message}),
            format!("• left by an earlier run: {message}"),
        ),
        Event::Discovering => event(
            "state",
            json!({"state": "discovering"}),
            "… discovering the cluster".into(),
        ),
        Event::Note { message } => event(
            "note",
            json!({"message": message}),
            format!("  note: {message}"),
        ),
        Event::Warning { message } => warning(message.clone(), message.clone()),
        Event::Ipv6NotForwarded { prefix } => warning(
            format!("{prefix}: IPv6 is not forwarded by node mode yet"),
            format!("{prefix}: IPv6 is not forwarded by node mode yet (use --mode tunnel)"),
        ),
        Event::TcpOnStack { reason } => warning(
            format!("TCP goes through the userspace stack: {reason}"),
            format!("TCP goes through the userspace stack (slower): {reason}"),
        ),
        Event::Ipv6TcpOnStack { error } => warning(
            format!("IPv6 TCP goes through the userspace stack: {error}"),
            format!("IPv6 TCP goes through the userspace stack (no IPv6 listener: {error})"),
        ),
        Event::NoCrashWatcher { error } => Rendered::Stderr(format!(
            "  warning: {error}; if kubelan is killed, `sudo kubelan reset` restores the machine"
        )),
        Event::Routes { tun, routes } => event(
            "routes",
            json!({"tun": tun, "routes": routes.iter().map(|(dst, why)| json!({"prefix": dst.to_string(), "why": why})).collect::<Vec<_>>()}),
            routes
                .iter()
                .map(|(dst, why)| format!("✓ route {dst} → {tun} ({why})"))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        Event::Dns { domain, config } => event(
            "dns",
            serde_json::to_value(config).unwrap_or(Value::Null),
            format!(
                "✓ DNS: *.{domain} → {} (through the tunnel), search {}; other names → {} ({})",
                config.server,
                config.search.join(" "),
                if config.upstreams.is_empty() {
                    "nowhere (the machine had no resolver)".to_string()
                } else {
                    config.upstreams.join(", ")
                },
                config.backend
            ),
        ),
        Event::NoClusterDns => {
            let m = "no cluster DNS Service found; DNS is not configured (pass --cluster-dns IP)";
            warning(m.into(), m.into())
        }
        Event::NoClusterDnsForLan => {
            let m = "no cluster DNS Service found; not serving DNS (pass --cluster-dns IP)";
            warning(m.into(), m.into())
        }
        Event::Forwarding { already: false } => event(
            "forwarding",
            json!({"enabled": true}),
            "✓ enabled IPv4 forwarding (net.ipv4.ip_forward = 1)".into(),
        ),
        Event::Forwarding { already: true } => event(
            "forwarding",
            json!({"enabled": true, "already": true}),
            "✓ IPv4 forwarding was already on".into(),
        ),
        Event::LanDns {
            listen,
            domain,
            lans,
            upstreams,
        } => event(
            "dns",
            json!({"listen": listen.to_string(), "domain": domain, "upstreams": upstreams}),
            format!(
                "✓ DNS for {} on {listen}: *.{domain} through the tunnel; other names → {}",
                joined(lans, ", "),
                lan_upstreams(upstreams)
            ),
        ),
        Event::NodeDns {
            listen,
            domain,
            cluster_dns,
            upstreams,
        } => event(
            "dns",
            json!({"listen": listen.to_string(), "domain": domain, "cluster_dns": cluster_dns.to_string(), "upstreams": upstreams}),
            format!(
                "✓ DNS on {listen}: *.{domain} and the cluster's reverse zones → {cluster_dns}; other names → {}",
                lan_upstreams(upstreams)
            ),
        ),
        Event::Nft {
            table,
            snat,
            lan,
            cluster,
        } => event(
            "nft",
            json!({"table": format!("ip {table}"), "snat": snat, "lan": lan, "cluster": cluster}),
            format!(
                "✓ nftables table ip {table}: {} → {} {}",
                joined(lan, ", "),
                joined(cluster, ", "),
                if *snat {
                    "masqueraded to this host"
                } else {
                    "forwarded as is (--no-snat: pods see LAN addresses)"
                }
            ),
        ),
        Event::Redirect { table, listen } => event(
            "redirect",
            json!({"table": table, "listen": listen}),
            format!(
                "✓ TCP into the cluster terminated by the kernel (nftables table {table} → {})",
                listen.join(", ")
            ),
        ),
        Event::TunnelReady => event(
            "ready",
            json!({"mode": "tunnel"}),
            "gateway ready: route the cluster prefixes to this host on the office router (`kubelan routes` prints them)".into(),
        ),
        Event::NodeReady { listen, domain } => event(
            "ready",
            json!({"mode": "node"}),
            format!(
                "gateway ready. On the office router: `kubelan routes --gateway {listen}` prints the routes; point the LAN's DNS (or a conditional forwarder for {domain}) at {listen}. Ctrl-C stops and undoes everything."
            ),
        ),
        Event::Session(state) => event(
            "state",
            json!({"state": state_name(state), "detail": state.to_string()}),
            state_line(state),
        ),
        Event::Quitting => event(
            "state",
            json!({"state": "quitting"}),
            "… `kubelan quit` asked to disconnect".into(),
        ),
        Event::Disconnecting => event(
            "state",
            json!({"state": "disconnecting"}),
            "… disconnecting, restoring routes and DNS".into(),
        ),
        Event::Stopping => event(
            "state",
            json!({"state": "stopping"}),
            "… stopping, removing the firewall table and restoring forwarding".into(),
        ),
        Event::Summary(s) => event(
            "summary",
            serde_json::to_value(s).unwrap_or(Value::Null),
            s.line(),
        ),
        Event::LiveSummary(s) => Rendered::InPlace(format!("\r\x1b[2K{}", s.line())),
        Event::LiveSummaryEnd => Rendered::Stderr(String::new()),
        Event::Restored { outcome } => event(
            "restore",
            json!({"message": outcome}),
            format!("  {outcome}"),
        ),
        Event::RestoreIncomplete => Rendered::Stderr(
            "some changes could not be undone; `sudo kubelan reset` retries".into(),
        ),
        Event::Persisted { unit, path } => Rendered::Stdout(format!(
            "installed and started {unit} ({}); `systemctl status {unit}` shows it, `journalctl -u {unit}` its summary; `sudo kubelan reset` removes it",
            path.display()
        )),
    }
}

/// The JSON line of an event at `time`.
pub(crate) fn json_line(name: &str, mut fields: Value, time: &str) -> String {
    if let Some(map) = fields.as_object_mut() {
        map.insert("event".into(), name.into());
        map.insert("time".into(), time.into());
    }
    fields.to_string()
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Prints each event as a line for people (stderr) or a JSON line (stdout).
pub(crate) fn printer(json: bool) -> EventSink {
    Arc::new(move |e: Event| match render(&e) {
        Rendered::Event {
            name,
            fields,
            human,
        } => {
            if json {
                println!("{}", json_line(name, fields, &now()));
            } else {
                eprintln!("{human}");
            }
        }
        Rendered::Stderr(line) => eprintln!("{line}"),
        Rendered::Stdout(line) => println!("{line}"),
        Rendered::InPlace(text) => eprint!("{text}"),
    })
}

#[cfg(test)]
mod tests {
    use kubelan_session::{CarrierInfo, CarrierKind};
    use kubelan_vpn::event::{DnsConfigured, Summary};

    use super::*;

    /// One sample of every event (both modes, every session state): the specification of
    /// what `connect` and `gateway` print, both renderings of each in `tests/render/events.txt`
    /// (the texts are those the binary printed before the modes moved into `kubelan-vpn`).
    fn samples() -> Vec<Event> {
        let net = |s: &str| s.parse().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let message = |m: &str| m.to_string();
        let summary = Summary {
            clients: 2,
            flows: 7,
            bytes_up: 1536,
            bytes_down: 3 * 1024 * 1024,
            dns_cluster: 4,
            dns_other: 1,
            ..Summary::default()
        };
        let why = "direct mTLS to 10.4.7.11:30443 (agent kubelan-system/kubelan-agent-x on node1): no answer to pings for 3.0 s";
        let direct = CarrierInfo {
            kind: CarrierKind::Direct,
            peer: "10.4.7.11:30443".into(),
            agent: "kubelan-system/kubelan-agent-x on node1".into(),
            version: 1,
            software: "kubelan 0.1.0".into(),
        };
        vec![
            Event::Cleanup {
                message: message("removed route 172.17.16.0/20 dev kubelan0"),
            },
            Event::Discovering,
            Event::Note {
                message: message("cluster domain: assuming cluster.local"),
            },
            Event::Warning {
                message: message("--exclude 10.0.0.0/8 matches no cluster prefix"),
            },
            Event::Routes {
                tun: "kubelan0".into(),
                routes: vec![
                    (net("172.17.16.0/20"), "services: flag".into()),
                    (net("172.17.32.0/19"), "pods: node podCIDRs".into()),
                ],
            },
            Event::Dns {
                domain: "cluster.local".into(),
                config: DnsConfigured {
                    configured: true,
                    backend: "systemd-resolved".into(),
                    server: "172.17.16.10".into(),
                    routing_domains: vec!["cluster.local".into()],
                    search: ["default.svc.", "svc.", ""]
                        .map(|s| format!("{s}cluster.local"))
                        .to_vec(),
                    upstreams: vec![],
                },
            },
            Event::NoClusterDns,
            Event::TcpOnStack {
                reason: message("nft: command not found (install nftables)"),
            },
            Event::Ipv6TcpOnStack {
                error: message("address family not supported"),
            },
            Event::Redirect {
                table: "inet kubelan_connect".into(),
                listen: vec!["127.0.0.1:40001".into(), "[::1]:40002".into()],
            },
            Event::Session(SessionState::Connecting),
            Event::Session(SessionState::Failed("the agent refused the session".into())),
            Event::Quitting,
            Event::Disconnecting,
            Event::Restored {
                outcome: message("removed link kubelan0"),
            },
            Event::RestoreIncomplete,
            Event::NoCrashWatcher {
                error: message("pidfd_open: not supported"),
            },
            Event::Ipv6NotForwarded {
                prefix: net("fd00:10::/64"),
            },
            Event::NoClusterDnsForLan,
            Event::Forwarding { already: false },
            Event::Forwarding { already: true },
            Event::Nft {
                table: "kubelan".into(),
                snat: true,
                lan: vec!["172.16.0.0/18".parse().unwrap()],
                cluster: vec![
                    "172.17.16.0/20".parse().unwrap(),
                    "172.17.32.0/19".parse().unwrap(),
                ],
            },
            Event::Nft {
                table: "kubelan".into(),
                snat: false,
                lan: vec!["172.16.0.0/18".parse().unwrap()],
                cluster: vec!["172.17.16.0/20".parse().unwrap()],
            },
            Event::NodeDns {
                listen: "172.16.1.12:53".parse().unwrap(),
                domain: "cluster.local".into(),
                cluster_dns: ip("172.17.16.10"),
                upstreams: vec![ip("9.9.9.9"), ip("1.1.1.1")],
            },
            Event::LanDns {
                listen: "172.16.1.12:53".parse().unwrap(),
                domain: "cluster.local".into(),
                lans: vec![net("172.16.0.0/18"), net("192.168.10.0/24")],
                upstreams: vec![],
            },
            Event::TunnelReady,
            Event::NodeReady {
                listen: ip("172.16.1.12"),
                domain: "cluster.local".into(),
            },
            Event::Summary(summary),
            Event::LiveSummary(summary),
            Event::LiveSummaryEnd,
            Event::Stopping,
            Event::Persisted {
                unit: "kubelan-gateway.service".into(),
                path: "/etc/systemd/system/kubelan-gateway.service".into(),
            },
            Event::Session(SessionState::Connected {
                carriers: vec![direct],
                down: None,
            }),
            Event::Session(SessionState::Reconnecting { error: why.into() }),
        ]
    }

    #[test]
    fn every_event_renders_as_its_golden_lines() {
        let mut out = String::new();
        for e in samples() {
            out.push_str(&match render(&e) {
                Rendered::Event {
                    name,
                    fields,
                    human,
                } => {
                    format!(
                        "{human}\n{}\n",
                        json_line(name, fields, "2026-01-02T03:04:05Z")
                    )
                }
                Rendered::Stderr(l) => format!("stderr: {l}\n"),
                Rendered::Stdout(l) => format!("stdout: {l}\n"),
                Rendered::InPlace(t) => format!("in place: {t:?}\n"),
            });
        }
        crate::tests::golden("events.txt", &out);
    }
}
