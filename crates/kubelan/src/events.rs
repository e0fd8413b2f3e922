//! Where `connect` and `gateway` events go: each event's line (its `Display`) on stderr, or
//! with `--output json` its JSON document (`ConnectEvent`) with the `time` added, one per line
//! on stdout; a few are text on one stream whatever the format.

use std::sync::Arc;

use kubelan_term::json::Document;
use kubelan_vpn::event::{Event, EventSink};

/// An event as written: the stream, and the text.
enum Written {
    /// A line on stderr.
    Stderr(String),
    /// A line on stdout.
    Stdout(String),
    /// Text on stderr without a newline (a line refreshed in place).
    InPlace(String),
}

/// How `e` is written, in JSON (`json`) or for people; `time` stamps JSON lines.
fn written(e: &Event, json: bool, time: &str) -> Written {
    match e {
        // What the user must read (and a terminal's in-place line) stays text.
        Event::NoCrashWatcher { .. } | Event::RestoreIncomplete | Event::LiveSummaryEnd => {
            Written::Stderr(e.to_string())
        }
        Event::Persisted { .. } => Written::Stdout(e.to_string()),
        Event::LiveSummary(_) => Written::InPlace(format!("\r\x1b[2K{e}")),
        _ if json => {
            let mut v = e.to_document().unwrap_or_default();
            if let Some(map) = v.as_object_mut() {
                map.insert("time".into(), time.into());
            }
            Written::Stdout(v.to_string())
        }
        _ => Written::Stderr(e.to_string()),
    }
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Prints each event as a line for people (stderr) or a JSON line (stdout).
pub(crate) fn printer(json: bool) -> EventSink {
    Arc::new(move |e: Event| match written(&e, json, &now()) {
        Written::Stderr(line) => eprintln!("{line}"),
        Written::Stdout(line) => println!("{line}"),
        Written::InPlace(text) => eprint!("{text}"),
    })
}

#[cfg(test)]
mod tests {
    use kubelan_session::SessionState;
    use kubelan_vpn::Summary;

    use super::*;

    /// Which stream each kind of event takes in both formats, and the JSON envelope (the
    /// lines themselves are `kubelan-vpn`'s golden file): `tests/render/events.txt`.
    #[test]
    fn events_go_to_their_stream_with_their_envelope() {
        let summary = Summary {
            clients: 2,
            flows: 7,
            bytes_up: 1536,
            bytes_down: 3 * 1024 * 1024,
            dns_cluster: 4,
            dns_other: 1,
            ..Summary::default()
        };
        let samples = [
            Event::Routes {
                tun: "kubelan0".into(),
                routes: vec![
                    ("172.17.16.0/20".parse().unwrap(), "services: flag".into()),
                    (
                        "172.17.32.0/19".parse().unwrap(),
                        "pods: node podCIDRs".into(),
                    ),
                ],
            },
            Event::Session(SessionState::Connecting),
            Event::Forwarding { already: true },
            Event::Summary(summary),
            Event::LiveSummary(summary),
            Event::LiveSummaryEnd,
            Event::RestoreIncomplete,
            Event::NoCrashWatcher {
                error: "pidfd_open: not supported".into(),
            },
            Event::Persisted {
                unit: "kubelan-gateway.service".into(),
                path: "/etc/systemd/system/kubelan-gateway.service".into(),
            },
        ];
        let mut out = String::new();
        for e in &samples {
            for (format, json) in [("human", false), ("json", true)] {
                out.push_str(&match written(e, json, "2026-01-02T03:04:05Z") {
                    Written::Stderr(l) => format!("{format}: stderr: {l}\n"),
                    Written::Stdout(l) => format!("{format}: stdout: {l}\n"),
                    Written::InPlace(t) => format!("{format}: in place: {t:?}\n"),
                });
            }
        }
        crate::tests::golden("events.txt", &out);
    }
}
