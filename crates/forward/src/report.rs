//! What a running forward tells its user, sans IO: [`Event`]s (printed as lines, or as JSON
//! with `--output json`) and the live table of [`Row`]s ([`render_table`]).

use std::fmt;

use serde::Serialize;

/// Something that happened, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A local address accepts connections for a forward.
    Listening {
        /// The forward (`svc/web`, or `default/web` in bulk mode).
        forward: String,
        /// The local address.
        local: String,
        /// The remote port as asked (`80`, `http`).
        remote: String,
        /// Why the port differs from the one asked for, when it does.
        #[serde(skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// Every forward asked for at start listens (and names are published in bulk mode).
    Ready {
        /// Forwards.
        forwards: usize,
        /// Local addresses listening.
        listeners: usize,
    },
    /// New connections of a forward's port go to another pod, or nowhere.
    Backend {
        /// The forward.
        forward: String,
        /// The remote port as asked.
        remote: String,
        /// The pod, when there is one.
        #[serde(skip_serializing_if = "Option::is_none")]
        pod: Option<String>,
        /// The port in the pod.
        #[serde(skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
        /// Why there is no pod.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// One connection failed (the forward goes on).
    ConnectionFailed {
        /// The forward.
        forward: String,
        /// The pod it was meant for.
        #[serde(skip_serializing_if = "Option::is_none")]
        pod: Option<String>,
        /// What went wrong and what to do.
        error: String,
    },
    /// Bulk mode: a Service appeared and is forwarded.
    ServiceAdded {
        /// `namespace/name`.
        forward: String,
        /// Its loopback address.
        address: String,
        /// Its local ports (`80`, or `10080→80` when moved).
        ports: Vec<String>,
    },
    /// Bulk mode: a Service went away.
    ServiceRemoved {
        /// `namespace/name`.
        forward: String,
    },
    /// Bulk mode: the hosts block was written.
    Hosts {
        /// The hosts file.
        path: String,
        /// How many addresses it names.
        entries: usize,
    },
    /// Something the user may need to act on; the forward goes on.
    Warning {
        /// The message.
        message: String,
    },
}

/// The `type` of `forward`'s JSON lines: its events, and the `addresses` and stats lines
/// the binary writes beside them.
pub const JSON_TYPE: &str = "ForwardEvent";

impl kubelan_term::json::Document for Event {
    const TYPE: &'static str = JSON_TYPE;
}

/// A JSON line `forward` writes beside its events (`addresses`, `stats`, `stopped`), with
/// the same envelope as the events.
pub fn json_line(line: serde_json::Value) -> serde_json::Value {
    kubelan_term::json::enveloped(JSON_TYPE, line)
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Listening {
                forward,
                local,
                remote,
                note,
            } => {
                write!(f, "forwarding {local} -> {forward}:{remote}")?;
                if let Some(n) = note {
                    write!(f, " ({n})")?;
                }
                Ok(())
            }
            Event::Ready {
                forwards,
                listeners,
            } => write!(
                f,
                "ready: {forwards} forward(s) on {listeners} local address(es); Ctrl-C to stop"
            ),
            Event::Backend {
                forward,
                remote,
                pod,
                port,
                reason,
            } => match (pod, port) {
                (Some(pod), Some(port)) => {
                    write!(f, "{forward}:{remote} -> pod {pod}:{port}")
                }
                _ => write!(
                    f,
                    "{forward}:{remote}: waiting: {}",
                    reason.as_deref().unwrap_or("no pod")
                ),
            },
            Event::ConnectionFailed {
                forward,
                pod,
                error,
            } => match pod {
                Some(p) => write!(f, "{forward}: a connection to pod {p} failed: {error}"),
                None => write!(f, "{forward}: a connection failed: {error}"),
            },
            Event::ServiceAdded {
                forward,
                address,
                ports,
            } => write!(f, "+ {forward} on {address} ports {}", ports.join(", ")),
            Event::ServiceRemoved { forward } => write!(f, "- {forward} removed"),
            Event::Hosts { path, entries } => {
                write!(f, "names of {entries} Service(s) written to {path}")
            }
            Event::Warning { message } => write!(f, "warning: {message}"),
        }
    }
}

/// One forward in the live table and in `stats` output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Row {
    /// `svc/web`, or `default/web` in bulk mode.
    pub forward: String,
    /// Local addresses (`127.0.0.1:8080`).
    pub local: Vec<String>,
    /// Port mappings (`8080→80`).
    pub ports: Vec<String>,
    /// Backing pods (`web-5d9f-x:8080`), or why there is none.
    pub pods: Vec<String>,
    /// Connections open now.
    pub open: u64,
    /// Connections since start.
    pub total: u64,
    /// Connections that failed.
    pub failed: u64,
    /// Bytes to the pods.
    pub bytes_up: u64,
    /// Bytes from the pods.
    pub bytes_down: u64,
}

/// Counters of the whole process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Port-forward WebSockets opened to the API server (each is one TCP+TLS connection).
    pub api_connections: u64,
    /// Upgrades the API server refused or that failed.
    pub api_failures: u64,
    /// Local connections accepted.
    pub connections: u64,
}

/// `1.2 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn cut(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else if width == 0 {
        String::new()
    } else {
        let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// The live table, one line per forward (more when a forward has several addresses or
/// pods), fitted to `width` columns by shortening the POD column first.
pub fn render_table(rows: &[Row], totals: &Totals, width: usize) -> String {
    let head = ["FORWARD", "LOCAL", "PORTS", "POD", "CONNS", "BYTES ↑/↓"];
    let mut lines: Vec<[String; 6]> = Vec::new();
    for r in rows {
        let n = r.local.len().max(r.pods.len()).max(1);
        for i in 0..n {
            let first = i == 0;
            lines.push([
                if first {
                    r.forward.clone()
                } else {
                    String::new()
                },
                r.local.get(i).cloned().unwrap_or_default(),
                if first {
                    r.ports.join(",")
                } else {
                    String::new()
                },
                r.pods.get(i).cloned().unwrap_or_default(),
                if first {
                    let mut c = format!("{}/{}", r.open, r.total);
                    if r.failed > 0 {
                        c.push_str(&format!(" ({} failed)", r.failed));
                    }
                    c
                } else {
                    String::new()
                },
                if first {
                    format!(
                        "{} / {}",
                        human_bytes(r.bytes_up),
                        human_bytes(r.bytes_down)
                    )
                } else {
                    String::new()
                },
            ]);
        }
    }
    let mut w: [usize; 6] = head.map(|h| h.chars().count());
    for l in &lines {
        for (i, c) in l.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    // Fit: shrink POD, then FORWARD, then LOCAL, never below their headers.
    let total = |w: &[usize; 6]| w.iter().sum::<usize>() + 2 * 5;
    for col in [3usize, 0, 1] {
        let over = total(&w).saturating_sub(width);
        if over == 0 {
            break;
        }
        let min = head[col].chars().count().max(8);
        w[col] = w[col].saturating_sub(over).max(min);
    }
    let fmt_line = |cells: &[String; 6]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let c = cut(c, w[i]);
            if i == 5 {
                s.push_str(&c);
            } else {
                s.push_str(&format!("{c:<width$}  ", width = w[i]));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = fmt_line(&head.map(String::from));
    out.push('\n');
    for l in &lines {
        out.push_str(&fmt_line(l));
        out.push('\n');
    }
    out.push_str(&format!(
        "{} connection(s) over {} API connection(s){}\n",
        totals.connections,
        totals.api_connections,
        if totals.api_failures > 0 {
            format!(", {} refused", totals.api_failures)
        } else {
            String::new()
        }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `forward --output json`: each line is a versioned `ForwardEvent` (docs/json.md).
    #[test]
    fn json_lines_are_versioned_documents() {
        use kubelan_term::json::Document;
        let e = Event::Ready {
            forwards: 2,
            listeners: 3,
        };
        let v = e.to_document().unwrap();
        assert_eq!(v["apiVersion"], "kubelan.dev/v1");
        assert_eq!(v["type"], "ForwardEvent");
        assert_eq!(v["event"], "ready");
        assert_eq!(v["listeners"], 3);
        let v = json_line(serde_json::json!({"event": "stats", "totals": Totals::default()}));
        assert_eq!(v["apiVersion"], "kubelan.dev/v1");
        assert_eq!(v["type"], "ForwardEvent");
        assert_eq!(v["totals"]["connections"], 0);
    }

    fn row() -> Row {
        Row {
            forward: "default/web".into(),
            local: vec!["127.1.0.1:80".into()],
            ports: vec!["80".into()],
            pods: vec!["web-7c9d4b7f8-abcde:80".into()],
            open: 2,
            total: 10,
            failed: 1,
            bytes_up: 1234,
            bytes_down: 5 * 1024 * 1024,
        }
    }

    #[test]
    fn table_layout() {
        let t = render_table(
            &[row()],
            &Totals {
                api_connections: 10,
                api_failures: 0,
                connections: 10,
            },
            200,
        );
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("FORWARD      LOCAL"), "{t}");
        assert!(
            lines[1].contains("web-7c9d4b7f8-abcde:80") && lines[1].contains("2/10 (1 failed)"),
            "{t}"
        );
        assert!(lines[1].ends_with("1.2 KiB / 5.0 MiB"), "{t}");
        assert_eq!(
            lines.last().unwrap(),
            &"10 connection(s) over 10 API connection(s)"
        );
        // Narrow terminals shorten the pod column first.
        let narrow = render_table(&[row()], &Totals::default(), 80);
        let line = narrow.lines().nth(1).unwrap();
        assert!(
            line.contains("web-7c9d4…") && line.starts_with("default/web "),
            "{narrow}"
        );
        assert!(narrow.lines().all(|l| l.chars().count() <= 80), "{narrow}");
    }

    #[test]
    fn event_lines_and_json() {
        let e = Event::Backend {
            forward: "svc/web".into(),
            remote: "80".into(),
            pod: None,
            port: None,
            reason: Some("no ready pod".into()),
        };
        assert_eq!(e.to_string(), "svc/web:80: waiting: no ready pod");
        let j = serde_json::to_value(&e).unwrap();
        assert_eq!(j["event"], "backend");
        assert!(j.get("pod").is_none());
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
