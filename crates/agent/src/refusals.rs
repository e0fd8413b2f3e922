//! Bounded logging of policy refusals.
//!
//! A client can ask for refused destinations as fast as it can open streams; one log line
//! each would let it fill the agent's log (and the node's disk). [`RefusalLog`] logs a
//! refusal only when neither this client and destination were logged within the window
//! nor the window's budget of lines is spent; what it holds back is reported as one
//! summary line per window. Every refusal is still counted in the agent's stats.
//!
//! Sans-IO: the caller passes the time. Memory is bounded by the budget: only the lines of
//! the current window are remembered.

use std::collections::VecDeque;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// One window: a client and destination are logged at most once per window.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);

/// Lines per window for all clients and destinations together.
pub(crate) const BUDGET: usize = 5;

/// Whether to log one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Log it.
    Log,
    /// Count it for the next summary.
    Hold,
}

/// The refusal logger's state.
#[derive(Debug)]
pub(crate) struct RefusalLog {
    window: Duration,
    budget: usize,
    /// Lines logged within the last window: when, and for which (client, destination).
    logged: VecDeque<(Instant, IpAddr, u64)>,
    /// Refusals held back since the last summary.
    held: u64,
    last_summary: Option<Instant>,
}

impl Default for RefusalLog {
    fn default() -> Self {
        Self::new(WINDOW, BUDGET)
    }
}

impl RefusalLog {
    pub(crate) fn new(window: Duration, budget: usize) -> Self {
        Self {
            window,
            budget,
            logged: VecDeque::with_capacity(budget),
            held: 0,
            last_summary: None,
        }
    }

    /// One refusal of `destination` (an address or a host name; the port is left out so
    /// that a scan of ports is one destination) for `client` at `now`.
    pub(crate) fn refusal(
        &mut self,
        client: IpAddr,
        destination: impl Hash,
        now: Instant,
    ) -> Verdict {
        let dest = {
            let mut h = DefaultHasher::new();
            destination.hash(&mut h);
            h.finish()
        };
        while let Some(&(t, _, _)) = self.logged.front() {
            if now.saturating_duration_since(t) >= self.window {
                self.logged.pop_front();
            } else {
                break;
            }
        }
        let seen = self
            .logged
            .iter()
            .any(|&(_, c, d)| c == client && d == dest);
        if seen || self.logged.len() >= self.budget {
            self.held += 1;
            Verdict::Hold
        } else {
            self.logged.push_back((now, client, dest));
            Verdict::Log
        }
    }

    /// The refusals held back, at most once per window: `Some(n)` means "log that `n`
    /// refusals were not logged". Call it periodically.
    pub(crate) fn summary(&mut self, now: Instant) -> Option<u64> {
        if self.held == 0 {
            return None;
        }
        if let Some(t) = self.last_summary
            && now.saturating_duration_since(t) < self.window
        {
            return None;
        }
        self.last_summary = Some(now);
        Some(std::mem::take(&mut self.held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_line_per_client_and_destination_per_window() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut log = RefusalLog::default();
        let (a, b) = (ip("10.4.7.10"), ip("10.4.7.20"));
        let office = ip("172.16.1.11");
        assert_eq!(log.refusal(a, office, t0), Verdict::Log);
        // A burst of 1 000 from the same client to the same place: held back.
        let logged = (1..1000)
            .filter(|&i| log.refusal(a, office, t0 + ms(i)) == Verdict::Log)
            .count();
        assert_eq!(logged, 0);
        // Another client, or another destination, is a new line.
        assert_eq!(log.refusal(b, office, t0 + ms(1001)), Verdict::Log);
        assert_eq!(log.refusal(a, "db.evil", t0 + ms(1002)), Verdict::Log);
        assert_eq!(log.summary(t0 + ms(1003)), Some(999));
        assert_eq!(log.summary(t0 + ms(1004)), None, "nothing held");
        // After the window the same pair is logged again.
        assert_eq!(log.refusal(a, office, t0 + WINDOW), Verdict::Log);
    }

    #[test]
    fn many_destinations_spend_the_budget_then_one_summary_per_window() {
        let t0 = Instant::now();
        let mut log = RefusalLog::default();
        let client = ip("10.4.7.10");
        let mut lines = 0;
        let mut summaries = 0;
        // A scan of 1 000 addresses in 2 minutes, summaries asked for every 5 s.
        for i in 0..1000u32 {
            let now = t0 + Duration::from_millis(u64::from(i) * 120);
            if log.refusal(client, IpAddr::from((0xac10_0000 + i).to_be_bytes()), now)
                == Verdict::Log
            {
                lines += 1;
            }
            if i % 42 == 0 && log.summary(now).is_some() {
                summaries += 1;
            }
        }
        // Two windows: BUDGET lines and at most one summary each.
        assert!(lines <= 2 * BUDGET + BUDGET, "{lines} lines");
        assert!(summaries <= 3, "{summaries} summaries");
        assert!(log.logged.len() <= BUDGET, "memory stays bounded");
    }
}
