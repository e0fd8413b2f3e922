//! Handshakes in progress per source: a LAN client that opens connections and sends
//! nothing (or trickles its handshake) holds a socket and a task for the whole handshake
//! timeout. Without a per-source bound one machine could fill the proxy's client limit
//! that way and lock everyone else out; no login fails, so the login limiter never sees
//! it. A source (an IPv4 address or an IPv6 /64, as for logins) may have at most
//! [`ProxyConfig::max_handshakes_per_source`](crate::ProxyConfig) handshakes open;
//! connections beyond that are closed at accept. Loopback clients are not counted: they
//! are this machine's own programs, which may open many connections at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::limiter::source_of;

/// Open handshakes per source (sans-IO apart from the lock; entries exist only while a
/// handshake is open, so the map is bounded by the proxy's client limit).
#[derive(Debug)]
pub(crate) struct Pending {
    open: Mutex<HashMap<IpAddr, usize>>,
    limit: usize,
}

/// One open handshake; dropping it (the first request was read, or the connection
/// ended) frees its slot.
#[derive(Debug)]
pub(crate) enum Handshake {
    /// A loopback client: not counted.
    Local,
    /// Holds one of its source's slots.
    Counted {
        pending: Arc<Pending>,
        source: IpAddr,
    },
}

impl Pending {
    /// At most `limit` open handshakes per source.
    pub(crate) fn new(limit: usize) -> Arc<Pending> {
        Arc::new(Pending {
            open: Mutex::new(HashMap::new()),
            limit,
        })
    }

    /// Starts a handshake from `ip` (hold the result until its first request is read),
    /// or `None` when its source has `limit` open already. Loopback is never limited.
    pub(crate) fn begin(self: &Arc<Self>, ip: IpAddr) -> Option<Handshake> {
        if ip.to_canonical().is_loopback() {
            return Some(Handshake::Local);
        }
        let source = source_of(ip);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(source).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(Handshake::Counted {
            pending: self.clone(),
            source,
        })
    }

    #[cfg(test)]
    fn sources(&self) -> usize {
        self.open.lock().unwrap().len()
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        let Handshake::Counted { pending, source } = self else {
            return;
        };
        let mut open = pending.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(source) {
            *n -= 1;
            if *n == 0 {
                open.remove(source);
            }
        }
    }
}

/// Lets a repeated warning through at most once per interval and counts what it held
/// back meanwhile (connections closed at accept come in floods; one line a flood).
#[derive(Debug)]
pub struct Every {
    interval: Duration,
    /// When a line last went out, and how many were held back since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl Every {
    /// At most one line per `interval`.
    pub fn new(interval: Duration) -> Every {
        Every {
            interval,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(held back since the last line)` when a line may go out at `now`.
    pub fn check(&self, now: Instant) -> Option<u64> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match st.0 {
            Some(last) if now.duration_since(last) < self.interval => {
                st.1 += 1;
                None
            }
            _ => {
                let held = std::mem::take(&mut st.1);
                st.0 = Some(now);
                Some(held)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_source_gets_its_limit_and_others_are_unaffected() {
        let p = Pending::new(3);
        let held: Vec<_> = (0..3)
            .map(|_| p.begin(ip("172.16.1.11")).unwrap())
            .collect();
        assert!(
            p.begin(ip("172.16.1.11")).is_none(),
            "the fourth is refused"
        );
        assert!(p.begin(ip("172.16.1.12")).is_some(), "another PC is not");
        drop(held);
        assert!(
            p.begin(ip("172.16.1.11")).is_some(),
            "a finished handshake frees its slot"
        );
    }

    #[test]
    fn an_ipv6_64_is_one_source_and_loopback_is_not_counted() {
        let p = Pending::new(1);
        let _a = p.begin(ip("2001:db8::1")).unwrap();
        assert!(p.begin(ip("2001:db8::2")).is_none(), "same /64");
        assert!(p.begin(ip("2001:db8:0:1::2")).is_some(), "another /64");
        let locals: Vec<_> = (0..100)
            .map(|_| p.begin(ip("127.0.0.1")).unwrap())
            .collect();
        assert!(
            locals.iter().all(|h| matches!(h, Handshake::Local)),
            "loopback holds no slot"
        );
        assert!(matches!(
            p.begin(ip("::ffff:127.0.0.1")),
            Some(Handshake::Local)
        ));
        assert_eq!(p.sources(), 1);
    }

    #[test]
    fn entries_go_with_their_last_handshake() {
        let p = Pending::new(2);
        let a = p.begin(ip("10.0.0.1")).unwrap();
        let b = p.begin(ip("10.0.0.1")).unwrap();
        assert_eq!(p.sources(), 1);
        drop(a);
        assert_eq!(p.sources(), 1);
        drop(b);
        assert_eq!(p.sources(), 0);
    }

    #[test]
    fn a_flood_of_warnings_is_one_line_per_interval_with_a_count() {
        let every = Every::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(every.check(t0), Some(0));
        for i in 1..=500 {
            assert_eq!(every.check(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(every.check(t0 + Duration::from_secs(10)), Some(500));
        assert_eq!(every.check(t0 + Duration::from_secs(11)), None);
    }
}
