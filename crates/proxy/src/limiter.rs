//! Throttling of failed proxy logins per source address (sans-IO: the clock is an
//! argument, nothing here sleeps or touches a socket).
//!
//! A LAN-shared proxy is a password oracle: without a limit a client on the LAN tries
//! thousands of passwords a second. [`LoginLimiter`] keeps, per source (an IPv4 address
//! or an IPv6 /64, the unit one attacker controls), how often it failed, and answers two
//! questions:
//!
//! * [`admit`](LoginLimiter::admit), when a connection is accepted: may this source
//!   talk to the proxy at all right now? A source that is waiting out a delay or locked
//!   out is closed at once, before any task or buffer exists for it.
//! * [`try_login`](LoginLimiter::try_login), when credentials arrive: the same gate
//!   again (connections accepted earlier must not all be evaluated at once), then the
//!   check itself and its bookkeeping.
//!
//! The first [`LoginLimits::free_failures`] failures cost nothing (typos); then each
//! failure blocks the source for a doubling delay, and at
//! [`LoginLimits::lockout_after`] failures it is locked out for a while (doubling with
//! every further lockout). A source is forgotten [`LoginLimits::forget_after`] after its
//! last failure. Other sources are unaffected.
//!
//! Memory is bounded: at most [`LoginLimits::max_sources`] failing sources are tracked.
//! When an attacker cycles through more addresses than that, the failures of the
//! untracked ones share one overflow entry, throttled like a single source, so cycling
//! addresses buys no extra guesses. Sources that logged in successfully recently
//! (at most [`LoginLimits::max_trusted`] of them) are not held back by that overflow
//! entry, so known clients keep working during such an attack.
//!
//! Failures are logged in aggregate: the `announce` flag of [`LoginOutcome::Rejected`]
//! marks the first failure since the last [`Report`], which the caller takes every few
//! seconds.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

/// How failed logins are throttled (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoginLimits {
    /// Failures per source that cost nothing.
    pub free_failures: u32,
    /// The block after the first failure past the free ones; it doubles with each
    /// further failure.
    pub first_delay: Duration,
    /// The longest delay before a failure is answered, and the cap of the doubling.
    pub max_delay: Duration,
    /// Failures at which a source is locked out.
    pub lockout_after: u32,
    /// The first lockout; each further failure after it locks out twice as long.
    pub lockout: Duration,
    /// The longest lockout.
    pub max_lockout: Duration,
    /// A source whose last failure is this old (and that is not blocked) is forgotten.
    pub forget_after: Duration,
    /// Most failing sources tracked one by one; beyond, they share one entry.
    pub max_sources: usize,
    /// Most sources remembered as having logged in successfully.
    pub max_trusted: usize,
    /// How long a successful login keeps a source trusted.
    pub trust_for: Duration,
    /// Most failed logins whose answer is held back at once (the rest are answered at
    /// once; their source is blocked all the same).
    pub max_held: usize,
}

impl Default for LoginLimits {
    fn default() -> LoginLimits {
        LoginLimits {
            free_failures: 3,
            first_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(2),
            lockout_after: 10,
            lockout: Duration::from_secs(60),
            max_lockout: Duration::from_secs(15 * 60),
            forget_after: Duration::from_secs(15 * 60),
            max_sources: 4096,
            max_trusted: 1024,
            trust_for: Duration::from_secs(3600),
            max_held: 256,
        }
    }
}

impl LoginLimits {
    /// The block after failure number `failures` (1-based), below the lockout.
    fn delay_after(&self, failures: u32) -> Duration {
        if failures <= self.free_failures {
            return Duration::ZERO;
        }
        let doublings = (failures - self.free_failures - 1).min(30);
        self.first_delay
            .saturating_mul(1u32 << doublings)
            .min(self.max_delay)
    }

    /// Lockout number `n` (0-based).
    fn lockout_for(&self, n: u32) -> Duration {
        self.lockout
            .saturating_mul(1u32 << n.min(30))
            .min(self.max_lockout)
    }
}

/// The unit throttled together: an IPv4 address, or the /64 of an IPv6 address (one
/// host usually holds a whole /64). IPv4-mapped IPv6 addresses count as IPv4.
pub(crate) fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::MAX >> 64))),
        },
    }
}

/// One source's failures.
#[derive(Clone, Debug)]
struct Entry {
    failures: u32,
    lockouts: u32,
    /// No attempt from the source is evaluated before this.
    blocked_until: Instant,
    /// Whether the block is a lockout (rather than a delay).
    locked: bool,
    last_failure: Instant,
}

impl Entry {
    fn new(now: Instant) -> Entry {
        Entry {
            failures: 0,
            lockouts: 0,
            blocked_until: now,
            locked: false,
            last_failure: now,
        }
    }

    /// Records a failure; returns how long the source is now blocked and whether that
    /// is a (new) lockout.
    fn fail(&mut self, now: Instant, limits: &LoginLimits) -> (Duration, bool) {
        self.failures = self.failures.saturating_add(1);
        self.last_failure = now;
        let (block, locked) = if self.failures >= limits.lockout_after {
            let lock = limits.lockout_for(self.lockouts);
            self.lockouts = self.lockouts.saturating_add(1);
            (lock, true)
        } else {
            (limits.delay_after(self.failures), false)
        };
        self.blocked_until = now + block;
        self.locked = locked;
        (block, locked)
    }

    fn blocked(&self, now: Instant) -> bool {
        now < self.blocked_until
    }

    fn forgettable(&self, now: Instant, limits: &LoginLimits) -> bool {
        !self.blocked(now)
            && now.saturating_duration_since(self.last_failure) >= limits.forget_after
    }
}

/// Whether a source may talk to the proxy now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Go ahead.
    Allowed,
    /// Refuse without evaluating anything.
    Throttled {
        /// When the source may try again.
        until: Instant,
        /// Locked out (rather than waiting out a short delay).
        locked: bool,
    },
}

/// What [`LoginLimiter::try_login`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LoginOutcome {
    /// The credentials are right.
    Accepted,
    /// Wrong credentials.
    Rejected {
        /// How long to hold the failure answer back (at most
        /// [`LoginLimits::max_delay`]): a client that waits for it is slowed down.
        hold: Duration,
        /// Set when this failure locked the source out, until then.
        locked_until: Option<Instant>,
        /// The first failure since the last [`Report`]: log it on its own line.
        announce: bool,
    },
    /// Not evaluated: the source is blocked (see [`Admission::Throttled`]).
    Throttled {
        /// When the source may try again.
        until: Instant,
        /// Locked out (rather than waiting out a short delay).
        locked: bool,
    },
}

/// Most sources a [`Report`] names one by one.
const REPORT_SOURCES: usize = 8;

/// What happened since the last report.
#[derive(Clone, Debug)]
struct Window {
    since: Instant,
    failures: u64,
    refused: u64,
    lockouts: u64,
    sources: Vec<(IpAddr, u64)>,
    more_sources: bool,
    overflowed: bool,
}

impl Window {
    fn new(now: Instant) -> Window {
        Window {
            since: now,
            failures: 0,
            refused: 0,
            lockouts: 0,
            sources: Vec::new(),
            more_sources: false,
            overflowed: false,
        }
    }

    fn note_failure(&mut self, source: IpAddr) {
        self.failures += 1;
        if let Some(s) = self.sources.iter_mut().find(|s| s.0 == source) {
            s.1 += 1;
        } else if self.sources.len() < REPORT_SOURCES {
            self.sources.push((source, 1));
        } else {
            self.more_sources = true;
        }
    }
}

/// A summary of failed logins over an interval, for one log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Report {
    /// How long the summary covers.
    pub(crate) elapsed: Duration,
    /// Wrong credentials.
    pub(crate) failures: u64,
    /// Connections and logins refused because their source was blocked.
    pub(crate) refused: u64,
    /// Lockouts that started.
    pub(crate) lockouts: u64,
    /// Sources locked out now.
    pub(crate) locked_now: usize,
    /// Failing sources with their failures, most first (at most [`REPORT_SOURCES`]).
    pub(crate) sources: Vec<(IpAddr, u64)>,
    /// More sources failed than `sources` names.
    pub(crate) more_sources: bool,
    /// Some failures went to the shared overflow entry.
    pub(crate) overflowed: bool,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} failed login(s) in the last {} s",
            self.failures,
            self.elapsed.as_secs().max(1)
        )?;
        if !self.sources.is_empty() {
            let list: Vec<String> = self
                .sources
                .iter()
                .map(|(ip, n)| format!("{ip} ×{n}"))
                .collect();
            let more = if self.more_sources { ", and more" } else { "" };
            write!(f, " from {}{more}", list.join(", "))?;
        }
        if self.lockouts > 0 {
            write!(f, "; {} lockout(s) started", self.lockouts)?;
        }
        if self.locked_now > 0 {
            write!(f, "; {} source(s) locked out now", self.locked_now)?;
        }
        if self.refused > 0 {
            write!(
                f,
                "; {} connection(s) refused while their source was throttled",
                self.refused
            )?;
        }
        if self.overflowed {
            write!(
                f,
                "; more failing sources than tracked: the untracked ones share one limit"
            )?;
        }
        Ok(())
    }
}

/// Failed-login bookkeeping for every source (see the module documentation).
#[derive(Debug)]
pub(crate) struct LoginLimiter {
    limits: LoginLimits,
    failing: HashMap<IpAddr, Entry>,
    /// Shared by untracked sources once `failing` is full.
    overflow: Option<Entry>,
    /// Sources with a recent successful login, and when.
    trusted: HashMap<IpAddr, Instant>,
    window: Window,
}

impl LoginLimiter {
    /// A limiter with nothing recorded yet.
    pub(crate) fn new(limits: LoginLimits, now: Instant) -> LoginLimiter {
        LoginLimiter {
            limits,
            failing: HashMap::new(),
            overflow: None,
            trusted: HashMap::new(),
            window: Window::new(now),
        }
    }

    /// The entry that throttles `source`: its own, or the shared overflow entry when it
    /// has none, the table is full and it is not trusted.
    fn entry_of(&self, source: IpAddr, now: Instant) -> Option<&Entry> {
        if let Some(e) = self.failing.get(&source) {
            return Some(e);
        }
        let trusted = self
            .trusted
            .get(&source)
            .is_some_and(|t| now.saturating_duration_since(*t) < self.limits.trust_for);
        if trusted {
            return None;
        }
        self.overflow.as_ref()
    }

    /// Whether the source of `ip` may talk to the proxy now; a refusal is counted for
    /// the next [`Report`].
    pub(crate) fn admit(&mut self, ip: IpAddr, now: Instant) -> Admission {
        let source = source_of(ip);
        match self.entry_of(source, now) {
            Some(e) if e.blocked(now) => {
                let (until, locked) = (e.blocked_until, e.locked);
                self.window.refused += 1;
                Admission::Throttled { until, locked }
            }
            _ => Admission::Allowed,
        }
    }

    /// A login attempt from `ip`: refused unevaluated while the source is blocked, else
    /// `check` decides (it compares the credentials) and the outcome is recorded.
    pub(crate) fn try_login(
        &mut self,
        ip: IpAddr,
        now: Instant,
        check: impl FnOnce() -> bool,
    ) -> LoginOutcome {
        if let Admission::Throttled { until, locked } = self.admit(ip, now) {
            return LoginOutcome::Throttled { until, locked };
        }
        let source = source_of(ip);
        if check() {
            self.trust(source, now);
            return LoginOutcome::Accepted;
        }
        let announce = self.window.failures == 0;
        self.window.note_failure(source);
        if !self.failing.contains_key(&source) && self.failing.len() >= self.limits.max_sources {
            self.prune(now);
        }
        let limits = &self.limits;
        let entry = if self.failing.len() < limits.max_sources || self.failing.contains_key(&source)
        {
            self.failing
                .entry(source)
                .or_insert_with(|| Entry::new(now))
        } else {
            self.window.overflowed = true;
            self.overflow.get_or_insert_with(|| Entry::new(now))
        };
        let (block, locked) = entry.fail(now, limits);
        if locked {
            self.window.lockouts += 1;
        }
        LoginOutcome::Rejected {
            hold: block.min(limits.max_delay),
            locked_until: locked.then(|| now + block),
            announce,
        }
    }

    /// Remembers a successful login (bounded: the oldest goes when full).
    fn trust(&mut self, source: IpAddr, now: Instant) {
        if !self.trusted.contains_key(&source) && self.trusted.len() >= self.limits.max_trusted {
            let trust_for = self.limits.trust_for;
            self.trusted
                .retain(|_, t| now.saturating_duration_since(*t) < trust_for);
            if self.trusted.len() >= self.limits.max_trusted
                && let Some(oldest) = self
                    .trusted
                    .iter()
                    .min_by_key(|(_, t)| **t)
                    .map(|(k, _)| *k)
            {
                self.trusted.remove(&oldest);
            }
        }
        if self.limits.max_trusted > 0 {
            self.trusted.insert(source, now);
        }
    }

    /// Drops sources that have nothing left to hold against them.
    fn prune(&mut self, now: Instant) {
        let limits = &self.limits;
        self.failing.retain(|_, e| !e.forgettable(now, limits));
        if self
            .overflow
            .as_ref()
            .is_some_and(|e| e.forgettable(now, limits))
        {
            self.overflow = None;
        }
        let trust_for = limits.trust_for;
        self.trusted
            .retain(|_, t| now.saturating_duration_since(*t) < trust_for);
    }

    /// What happened since the last report (`None` when nothing did), and starts a new
    /// interval. Also drops forgotten sources, so call it regularly.
    pub(crate) fn take_report(&mut self, now: Instant) -> Option<Report> {
        self.prune(now);
        let w = std::mem::replace(&mut self.window, Window::new(now));
        if w.failures == 0 && w.refused == 0 {
            return None;
        }
        let mut sources = w.sources;
        sources.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let locked_now = self
            .failing
            .values()
            .chain(self.overflow.as_ref())
            .filter(|e| e.locked && e.blocked(now))
            .count();
        Some(Report {
            elapsed: now.saturating_duration_since(w.since),
            failures: w.failures,
            refused: w.refused,
            lockouts: w.lockouts,
            locked_now,
            sources,
            more_sources: w.more_sources,
            overflowed: w.overflowed,
        })
    }

    /// How many sources are tracked (failing and trusted), for tests of the bound.
    #[cfg(test)]
    fn tracked(&self) -> (usize, usize) {
        (self.failing.len(), self.trusted.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const MS: Duration = Duration::from_millis(1);

    /// Fails once from `from` at `now`.
    fn fail(l: &mut LoginLimiter, from: &str, now: Instant) -> LoginOutcome {
        l.try_login(ip(from), now, || false)
    }

    fn hold(o: LoginOutcome) -> Duration {
        match o {
            LoginOutcome::Rejected { hold, .. } => hold,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn delays_grow_then_lock_out_one_source_only() {
        let t0 = Instant::now();
        let limits = LoginLimits::default();
        let mut l = LoginLimiter::new(limits.clone(), t0);
        let mut now = t0;
        let mut holds = Vec::new();
        for _ in 0..9 {
            let o = fail(&mut l, "172.16.1.11", now);
            holds.push(hold(o));
            // Right after a delayed failure the source is blocked; the others are not.
            if holds.last() != Some(&Duration::ZERO) {
                assert!(matches!(
                    l.admit(ip("172.16.1.11"), now),
                    Admission::Throttled { locked: false, .. }
                ));
                assert_eq!(
                    l.try_login(ip("172.16.1.11"), now, || panic!("evaluated while blocked")),
                    LoginOutcome::Throttled {
                        until: now + *holds.last().unwrap(),
                        locked: false
                    }
                );
            }
            assert_eq!(l.admit(ip("172.16.1.12"), now), Admission::Allowed);
            now += holds.last().copied().unwrap();
        }
        assert_eq!(
            holds,
            [0, 0, 0, 250, 500, 1000, 2000, 2000, 2000].map(|ms| ms * MS)
        );
        // The tenth failure locks out for a minute (the answer is held 2 s at most).
        let o = fail(&mut l, "172.16.1.11", now);
        assert_eq!(
            o,
            LoginOutcome::Rejected {
                hold: 2000 * MS,
                locked_until: Some(now + Duration::from_secs(60)),
                announce: false
            }
        );
        for later in [Duration::ZERO, Duration::from_secs(59)] {
            assert!(matches!(
                l.admit(ip("172.16.1.11"), now + later),
                Admission::Throttled { locked: true, .. }
            ));
        }
        // Another client keeps working throughout, right credentials or not.
        assert_eq!(
            l.try_login(ip("172.16.1.12"), now, || true),
            LoginOutcome::Accepted
        );
        // After the lockout: one guess, and a longer lockout.
        now += Duration::from_secs(60);
        assert_eq!(l.admit(ip("172.16.1.11"), now), Admission::Allowed);
        let o = fail(&mut l, "172.16.1.11", now);
        assert!(
            matches!(o, LoginOutcome::Rejected { locked_until: Some(u), .. } if u == now + Duration::from_secs(120))
        );
        // The lockout is capped.
        for _ in 0..20 {
            now += limits.max_lockout;
            fail(&mut l, "172.16.1.11", now);
        }
        assert_eq!(
            l.admit(ip("172.16.1.11"), now + limits.max_lockout - MS),
            Admission::Throttled {
                until: now + limits.max_lockout,
                locked: true
            }
        );
    }

    #[test]
    fn right_credentials_are_refused_while_blocked_and_never_reset_the_count() {
        let t0 = Instant::now();
        let mut l = LoginLimiter::new(LoginLimits::default(), t0);
        for _ in 0..3 {
            fail(&mut l, "10.0.0.1", t0);
        }
        // Success does not wipe the failures: a guesser sharing a NAT address with a
        // real user must not get fresh free guesses from the user's logins.
        assert_eq!(
            l.try_login(ip("10.0.0.1"), t0, || true),
            LoginOutcome::Accepted
        );
        assert_eq!(hold(fail(&mut l, "10.0.0.1", t0)), 250 * MS);
        assert!(matches!(
            l.try_login(ip("10.0.0.1"), t0 + 100 * MS, || true),
            LoginOutcome::Throttled { .. }
        ));
        assert_eq!(
            l.try_login(ip("10.0.0.1"), t0 + 250 * MS, || true),
            LoginOutcome::Accepted
        );
    }

    #[test]
    fn sources_are_forgotten_after_a_quiet_period() {
        let t0 = Instant::now();
        let limits = LoginLimits::default();
        let mut l = LoginLimiter::new(limits.clone(), t0);
        for _ in 0..4 {
            fail(&mut l, "10.0.0.1", t0);
        }
        assert_eq!(l.tracked().0, 1);
        l.take_report(t0 + limits.forget_after - MS);
        assert_eq!(l.tracked().0, 1, "still remembered");
        l.take_report(t0 + limits.forget_after);
        assert_eq!(l.tracked().0, 0, "forgotten");
        // Fresh free failures again.
        assert_eq!(
            hold(fail(&mut l, "10.0.0.1", t0 + limits.forget_after)),
            Duration::ZERO
        );
        // A locked source is not forgotten before its lockout ends, however long that is.
        let mut l = LoginLimiter::new(
            LoginLimits {
                lockout: Duration::from_secs(3600),
                max_lockout: Duration::from_secs(3600),
                ..LoginLimits::default()
            },
            t0,
        );
        let mut now = t0;
        for _ in 0..10 {
            now += hold(fail(&mut l, "10.0.0.1", now));
        }
        let later = now + Duration::from_secs(3590);
        l.take_report(later);
        assert!(matches!(
            l.admit(ip("10.0.0.1"), later),
            Admission::Throttled { locked: true, .. }
        ));
    }

    #[test]
    fn ipv6_sources_are_their_64() {
        assert_eq!(source_of(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(source_of(ip("::ffff:172.16.1.11")), ip("172.16.1.11"));
        let t0 = Instant::now();
        let mut l = LoginLimiter::new(LoginLimits::default(), t0);
        for i in 0..4 {
            fail(&mut l, &format!("2001:db8:1:2::{i}"), t0);
        }
        assert!(matches!(
            l.admit(ip("2001:db8:1:2:ffff::9"), t0),
            Admission::Throttled { .. }
        ));
        assert_eq!(l.admit(ip("2001:db8:1:3::1"), t0), Admission::Allowed);
    }

    #[test]
    fn cycling_addresses_is_bounded_and_buys_nothing() {
        let t0 = Instant::now();
        let limits = LoginLimits {
            max_sources: 16,
            max_trusted: 4,
            ..LoginLimits::default()
        };
        let mut l = LoginLimiter::new(limits, t0);
        // A real client logs in before the attack.
        assert_eq!(
            l.try_login(ip("10.9.0.1"), t0, || true),
            LoginOutcome::Accepted
        );
        // An attacker with 10 000 addresses, each trying a few times.
        let mut evaluated = 0;
        let mut now = t0;
        for round in 0..3 {
            for i in 0..10_000u32 {
                let a = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
                if let LoginOutcome::Rejected { .. } = l.try_login(a, now, || false) {
                    evaluated += 1;
                }
                now += MS;
            }
            assert_eq!(
                l.tracked().0,
                16,
                "round {round}: the table stays at its bound"
            );
        }
        // The first 16 addresses get their free guesses each, the rest share one entry
        // that locks out like a single source: a bounded number of guesses in 30 s.
        assert!(
            evaluated <= 16 * 3 + 10 + 1,
            "{evaluated} guesses evaluated"
        );
        // The known client is not held back by the overflow lockout; an unknown one is.
        assert_eq!(
            l.try_login(ip("10.9.0.1"), now, || true),
            LoginOutcome::Accepted
        );
        assert!(matches!(
            l.admit(ip("10.9.0.2"), now),
            Admission::Throttled { .. }
        ));
        let r = l.take_report(now).unwrap();
        assert!(
            r.overflowed && r.more_sources && r.sources.len() == REPORT_SOURCES,
            "{r:?}"
        );
        // Trusted sources are bounded too.
        let mut l = LoginLimiter::new(
            LoginLimits {
                max_trusted: 4,
                ..LoginLimits::default()
            },
            now,
        );
        for i in 0..100u32 {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + i));
            l.try_login(a, now, || true);
        }
        assert_eq!(l.tracked().1, 4);
    }

    #[test]
    fn reports_aggregate_and_announce_once_per_interval() {
        let t0 = Instant::now();
        let mut l = LoginLimiter::new(LoginLimits::default(), t0);
        assert_eq!(l.take_report(t0), None);
        let announced: Vec<bool> = (0..300)
            .map(|i| {
                // Every attempt at the same instant: most are refused unevaluated.
                match l.try_login(ip("172.16.1.11"), t0 + i * MS, || false) {
                    LoginOutcome::Rejected { announce, .. } => announce,
                    _ => false,
                }
            })
            .collect();
        assert_eq!(announced.iter().filter(|a| **a).count(), 1);
        assert!(announced[0]);
        fail(&mut l, "172.16.1.12", t0 + 300 * MS);
        let r = l.take_report(t0 + Duration::from_secs(10)).unwrap();
        assert_eq!(r.elapsed, Duration::from_secs(10));
        assert_eq!(
            r.sources,
            [(ip("172.16.1.11"), r.failures - 1), (ip("172.16.1.12"), 1)]
        );
        assert!(r.failures < 10, "{r:?}");
        assert_eq!(r.failures + r.refused, 301);
        assert_eq!(
            r.to_string(),
            format!(
                "{} failed login(s) in the last 10 s from 172.16.1.11 ×{}, 172.16.1.12 ×1; {} connection(s) refused while their source was throttled",
                r.failures,
                r.failures - 1,
                r.refused
            )
        );
        // The next interval starts empty and announces again.
        assert_eq!(l.take_report(t0 + Duration::from_secs(20)), None);
        assert!(matches!(
            fail(&mut l, "172.16.1.13", t0 + Duration::from_secs(21)),
            LoginOutcome::Rejected { announce: true, .. }
        ));
    }
}
