//! Bounded logging of repeated failures: the first one at once, then at most one line per
//! interval saying how many happened since the last line.
//!
//! Sans-IO: the caller passes the time, so tests need no clock and no sleeping. A DNS
//! front end that logged one line per failed query could be made to write thousands of
//! lines a second by anyone who may send it queries; with a [`Tally`] a flood costs one
//! line per interval.

use std::time::{Duration, Instant};

/// Counts events of one kind and says when to log them.
#[derive(Debug, Clone)]
pub struct Tally {
    interval: Duration,
    last_line: Option<Instant>,
    pending: u64,
}

impl Tally {
    /// A tally that logs at most one line per `interval`.
    pub fn new(interval: Duration) -> Tally {
        Tally {
            interval,
            last_line: None,
            pending: 0,
        }
    }

    /// Records one event at `now`. `Some(n)`: log a line now, for `n` events (this one and
    /// those held back since the last line); `None`: stay quiet, the event is counted.
    pub fn record(&mut self, now: Instant) -> Option<u64> {
        if self.quiet_at(now) {
            self.pending += 1;
            None
        } else {
            let n = self.pending + 1;
            self.line(now);
            Some(n)
        }
    }

    /// The events held back, once the interval since the last line has passed (`None`
    /// before that, or when nothing is held back). Call it when [`Tally::due`] says so,
    /// so that the last events of a burst are reported too.
    pub fn flush(&mut self, now: Instant) -> Option<u64> {
        if self.pending == 0 || self.quiet_at(now) {
            return None;
        }
        let n = self.pending;
        self.line(now);
        Some(n)
    }

    /// When [`Tally::flush`] will have something to report, if events are held back.
    pub fn due(&self) -> Option<Instant> {
        if self.pending == 0 {
            return None;
        }
        self.last_line.map(|t| t + self.interval)
    }

    /// Events held back so far.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    fn quiet_at(&self, now: Instant) -> bool {
        self.last_line
            .is_some_and(|t| now.saturating_duration_since(t) < self.interval)
    }

    fn line(&mut self, now: Instant) {
        self.pending = 0;
        self.last_line = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_costs_one_line_per_interval_with_its_count() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut tally = Tally::new(Duration::from_secs(10));
        assert_eq!(tally.due(), None);
        assert_eq!(tally.record(t0), Some(1), "the first one is logged at once");
        let lines = (1..1000)
            .filter_map(|i| tally.record(t0 + Duration::from_millis(i)))
            .count();
        assert_eq!(lines, 0);
        assert_eq!(tally.pending(), 999);
        assert_eq!(tally.due(), Some(t0 + 10 * s));
        assert_eq!(tally.flush(t0 + 9 * s), None, "not before the interval");
        assert_eq!(tally.flush(t0 + 10 * s), Some(999));
        assert_eq!(tally.flush(t0 + 30 * s), None, "nothing left");
        assert_eq!(tally.due(), None);
        // Quiet since the flush at 10 s; the next event after 20 s is logged with its count.
        assert_eq!(tally.record(t0 + 15 * s), None);
        assert_eq!(tally.record(t0 + 21 * s), Some(2));
    }

    #[test]
    fn a_clock_going_backwards_keeps_it_quiet() {
        let t0 = Instant::now() + Duration::from_secs(100);
        let mut tally = Tally::new(Duration::from_secs(10));
        assert_eq!(tally.record(t0), Some(1));
        assert_eq!(tally.record(t0 - Duration::from_secs(50)), None);
    }
}
