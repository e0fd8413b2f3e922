//! The live table of an expose session: one row per exposed port with open and total
//! connections and bytes each way, built from [`ExposeEvent`]s (no IO; the CLI draws it).

use crate::events::ExposeEvent;
use crate::spec::ExposedPort;

/// Counters of one exposed port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Row {
    /// `SVCPORT/proto`.
    pub service: String,
    /// The local target.
    pub local: String,
    /// Connections open now.
    pub open: u64,
    /// Connections (or UDP flows) since the start.
    pub total: u64,
    /// Of those, the ones that failed or were cut.
    pub failed: u64,
    /// Bytes (datagrams for UDP) from pods to the local target, of ended connections.
    pub to_local: u64,
    /// Bytes (datagrams for UDP) from the local target to pods, of ended connections.
    pub from_local: u64,
}

/// The table: rows in argument order, plus the link state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// One row per exposed port, indexed by listener id.
    pub rows: Vec<Row>,
    /// The link to the relay, as the session last said.
    pub carrier: String,
}

impl Table {
    /// An empty table for `ports`.
    pub fn new(ports: &[ExposedPort]) -> Table {
        Table {
            rows: ports
                .iter()
                .map(|p| Row {
                    service: format!("{}/{}", p.service_port, p.local.protocol),
                    local: p.local.to_string(),
                    ..Row::default()
                })
                .collect(),
            carrier: "starting".into(),
        }
    }

    /// Counts `e`.
    pub fn apply(&mut self, e: &ExposeEvent) {
        match e {
            ExposeEvent::ConnectionOpened { listener, .. } => {
                if let Some(r) = row_of(&mut self.rows, *listener) {
                    r.open += 1;
                    r.total += 1;
                }
            }
            ExposeEvent::ConnectionClosed {
                listener,
                to_local,
                from_local,
                error,
                ..
            } => {
                if let Some(r) = row_of(&mut self.rows, *listener) {
                    // A flow refused before it opened was never counted as open.
                    r.open = r.open.saturating_sub(1);
                    r.to_local += to_local;
                    r.from_local += from_local;
                    if error.is_some() {
                        r.failed += 1;
                    }
                }
            }
            ExposeEvent::Carrier { state, .. } => self.carrier.clone_from(state),
            // `replace` learns its ports from the Service: rows come with the first
            // `Serving` (`80/tcp → 127.0.0.1:8080`, in listener order).
            ExposeEvent::Serving { ports, .. } if self.rows.is_empty() => {
                self.rows = ports
                    .iter()
                    .map(|p| {
                        let (service, local) = p.split_once(" → ").unwrap_or((p, ""));
                        Row {
                            service: service.into(),
                            local: local.into(),
                            ..Row::default()
                        }
                    })
                    .collect();
            }
            _ => {}
        }
    }

    /// The table as text, cut to `width` columns.
    pub fn render(&self, width: usize) -> String {
        let mut lines = vec![format!(
            "{:<12} {:<28} {:>5} {:>7} {:>6} {:>12} {:>12}",
            "SERVICE", "LOCAL", "OPEN", "TOTAL", "FAILED", "IN", "OUT"
        )];
        for r in &self.rows {
            lines.push(format!(
                "{:<12} {:<28} {:>5} {:>7} {:>6} {:>12} {:>12}",
                r.service,
                r.local,
                r.open,
                r.total,
                r.failed,
                human_bytes(r.to_local),
                human_bytes(r.from_local)
            ));
        }
        lines.push(format!("link: {}", self.carrier));
        let mut out = String::new();
        for l in lines {
            out.extend(l.chars().take(width));
            out.push('\n');
        }
        out
    }
}

fn row_of(rows: &mut [Row], listener: u32) -> Option<&mut Row> {
    usize::try_from(listener).ok().and_then(|i| rows.get_mut(i))
}

/// `512 B`, `1.5 KiB`, `10.0 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::plan;

    #[test]
    fn counts_connections_and_bytes_per_port() {
        let p = plan(&["8080".into(), "53/udp".into()], &[], None).unwrap();
        let mut t = Table::new(&p.ports);
        let open = |l| ExposeEvent::ConnectionOpened {
            listener: l,
            peer: "10.0.0.1:1".into(),
            local: String::new(),
        };
        let closed = |l, error: Option<&str>| ExposeEvent::ConnectionClosed {
            listener: l,
            peer: "10.0.0.1:1".into(),
            to_local: 1024,
            from_local: 10 * 1024 * 1024,
            error: error.map(String::from),
        };
        for e in [
            open(0),
            open(0),
            closed(0, None),
            open(1),
            closed(1, Some("reset")),
            open(9),
        ] {
            t.apply(&e);
        }
        t.apply(&ExposeEvent::Carrier {
            up: true,
            state: "connected".into(),
        });
        assert_eq!(
            (t.rows[0].open, t.rows[0].total, t.rows[0].failed),
            (1, 2, 0)
        );
        assert_eq!((t.rows[1].open, t.rows[1].failed), (0, 1));
        let text = t.render(200);
        assert_eq!(text.lines().count(), 4);
        assert!(text.contains("8080/tcp     127.0.0.1:8080"), "{text}");
        assert!(text.contains("1.0 KiB"), "{text}");
        assert!(text.contains("10.0 MiB"), "{text}");
        assert!(text.ends_with("link: connected\n"));
        assert!(t.render(20).lines().all(|l| l.chars().count() <= 20));
        assert_eq!(human_bytes(512), "512 B");
    }

    #[test]
    fn a_table_without_ports_takes_them_from_serving() {
        let mut t = Table::new(&[]);
        t.apply(&ExposeEvent::Serving {
            service: "web.default.svc".into(),
            ports: vec!["80/tcp → 127.0.0.1:8080".into()],
        });
        t.apply(&ExposeEvent::ConnectionOpened {
            listener: 0,
            peer: "10.0.0.1:1".into(),
            local: String::new(),
        });
        assert_eq!(
            (
                t.rows[0].service.as_str(),
                t.rows[0].local.as_str(),
                t.rows[0].open
            ),
            ("80/tcp", "127.0.0.1:8080", 1)
        );
    }
}
