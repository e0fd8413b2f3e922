//! Live counters of the proxy and their snapshot for a status line.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use kubelan_proto::ErrorKind;

/// Every [`ErrorKind`], in the order [`Stats::errors`] lists them.
const KINDS: [ErrorKind; 10] = [
    ErrorKind::Policy,
    ErrorKind::NoSuchHost,
    ErrorKind::ConnectionRefused,
    ErrorKind::Timeout,
    ErrorKind::Unreachable,
    ErrorKind::Reset,
    ErrorKind::CarrierLost,
    ErrorKind::Protocol,
    ErrorKind::ShuttingDown,
    ErrorKind::Other,
];

fn kind_index(kind: ErrorKind) -> usize {
    KINDS
        .iter()
        .position(|k| *k == kind)
        .unwrap_or(KINDS.len() - 1)
}

/// The counters behind [`Stats`], shared by every client task.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) clients: AtomicU64,
    pub(crate) flows_open: AtomicU64,
    pub(crate) flows_total: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    errors: [AtomicU64; KINDS.len()],
    auth_failures: AtomicU64,
    bad_clients: AtomicU64,
    rejected_clients: AtomicU64,
    throttled: AtomicU64,
}

impl Counters {
    pub(crate) fn clients(&self) -> u64 {
        self.clients.load(Relaxed)
    }

    pub(crate) fn flow_error(&self, kind: ErrorKind) {
        self.errors[kind_index(kind)].fetch_add(1, Relaxed);
    }

    pub(crate) fn auth_failure(&self) {
        self.auth_failures.fetch_add(1, Relaxed);
    }

    pub(crate) fn bad_client(&self) {
        self.bad_clients.fetch_add(1, Relaxed);
    }

    pub(crate) fn throttled(&self) {
        self.throttled.fetch_add(1, Relaxed);
    }

    pub(crate) fn rejected_client(&self) {
        self.rejected_clients.fetch_add(1, Relaxed);
    }

    pub(crate) fn up(&self, n: usize) {
        self.bytes_up.fetch_add(n as u64, Relaxed);
    }

    pub(crate) fn down(&self, n: usize) {
        self.bytes_down.fetch_add(n as u64, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            clients: self.clients.load(Relaxed),
            flows_open: self.flows_open.load(Relaxed),
            flows_total: self.flows_total.load(Relaxed),
            bytes_up: self.bytes_up.load(Relaxed),
            bytes_down: self.bytes_down.load(Relaxed),
            errors: KINDS
                .iter()
                .zip(&self.errors)
                .map(|(k, n)| (*k, n.load(Relaxed)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            auth_failures: self.auth_failures.load(Relaxed),
            bad_clients: self.bad_clients.load(Relaxed),
            rejected_clients: self.rejected_clients.load(Relaxed),
            throttled: self.throttled.load(Relaxed),
        }
    }
}

/// A snapshot of the proxy's counters ([`ProxyServer::stats`](crate::ProxyServer::stats)).
/// `Display` renders a one-line status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Clients connected now.
    pub clients: u64,
    /// Flows (TCP connections and UDP destinations) open now.
    pub flows_open: u64,
    /// Flows opened since start.
    pub flows_total: u64,
    /// Bytes received from clients (including protocol overhead).
    pub bytes_up: u64,
    /// Bytes sent to clients (including protocol overhead).
    pub bytes_down: u64,
    /// Failed flow opens by reason, only reasons seen at least once.
    pub errors: Vec<(ErrorKind, u64)>,
    /// Clients that presented missing or wrong credentials.
    pub auth_failures: u64,
    /// Clients that spoke neither protocol, broke it, or stayed silent too long.
    pub bad_clients: u64,
    /// Clients closed because `max_clients` were already connected.
    pub rejected_clients: u64,
    /// Connections and logins refused unevaluated because their source failed to log in
    /// too often (see [`LoginLimits`](crate::LoginLimits)).
    pub throttled: u64,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} clients, {} flows open ({} total), up {}, down {}",
            self.clients,
            self.flows_open,
            self.flows_total,
            Bytes(self.bytes_up),
            Bytes(self.bytes_down)
        )?;
        for (kind, n) in &self.errors {
            write!(f, ", {n} {}", kind.label())?;
        }
        for (n, what) in [
            (self.auth_failures, "auth failures"),
            (self.bad_clients, "bad clients"),
            (self.rejected_clients, "clients over the limit"),
            (self.throttled, "refused after failed logins"),
        ] {
            if n > 0 {
                write!(f, ", {n} {what}")?;
            }
        }
        Ok(())
    }
}

/// A byte count in binary units.
struct Bytes(u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut v = self.0 as f64;
        let mut unit = 0;
        while v >= 1024.0 && unit + 1 < UNITS.len() {
            v /= 1024.0;
            unit += 1;
        }
        if unit == 0 {
            write!(f, "{} B", self.0)
        } else {
            write!(f, "{v:.1} {}", UNITS[unit])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line() {
        let c = Counters::default();
        c.up(10);
        c.down(3 * 1024 * 1024);
        c.flow_error(ErrorKind::Policy);
        c.flow_error(ErrorKind::Policy);
        c.bad_client();
        c.throttled();
        let s = c.snapshot();
        assert_eq!(s.errors, vec![(ErrorKind::Policy, 2)]);
        assert_eq!(
            s.to_string(),
            "0 clients, 0 flows open (0 total), up 10 B, down 3.0 MiB, \
             2 refused by policy, 1 bad clients, 1 refused after failed logins"
        );
    }
}
