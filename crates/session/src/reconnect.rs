//! Reconnect decisions, sans-IO: which agent addresses a carrier dials and in what order,
//! when to ask the Kubernetes API again, and when a session on its fallback carrier tries
//! the preferred one again. Time comes in as [`Instant`]s; nothing here touches a socket.
//!
//! The rule behind them: what the API said last (the agent's addresses, its pod name) and
//! the credentials a session holds are enough to reconnect. The API is asked again in
//! parallel with bounded patience, never first, so a slow or frozen API server cannot
//! hold a carrier down while the agent itself answers.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Why a dialer wants the agent's addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// To (re)connect a carrier: ask the API again unless it answered moments ago.
    Dial,
    /// To probe a preferred carrier while another runs: the last answer is good enough
    /// unless it is old, so a session that stays on its fallback does not poll the API.
    Probe,
}

/// A dial asks the API again unless it answered within this time (several carriers
/// reconnecting at once share one answer).
pub(crate) const DIAL_REFRESH_AFTER: Duration = Duration::from_secs(1);
/// A probe asks the API only when it has not been asked for this long.
pub(crate) const PROBE_REFRESH_AFTER: Duration = Duration::from_secs(60);

/// The last answer of one lookup through the API (the agent's direct addresses, or the
/// pod a port-forward reaches) and when it came.
#[derive(Debug, Clone)]
pub(crate) struct LookupCache<A> {
    entries: Vec<A>,
    /// When the API last answered.
    answered: Option<Instant>,
    /// When the API was last asked.
    asked: Option<Instant>,
    in_flight: bool,
}

impl<A: Clone> LookupCache<A> {
    /// Knows nothing yet.
    pub(crate) fn new() -> LookupCache<A> {
        LookupCache {
            entries: Vec::new(),
            answered: None,
            asked: None,
            in_flight: false,
        }
    }

    /// Takes an answer obtained elsewhere (the lookup made at start-up).
    pub(crate) fn seed(&mut self, entries: Vec<A>, now: Instant) {
        self.entries = entries;
        self.answered = Some(now);
        self.asked = Some(now);
    }

    /// What the API said last (empty before its first answer).
    pub(crate) fn entries(&self) -> &[A] {
        &self.entries
    }

    /// Whether a lookup is under way (a dial then waits for that one instead of asking again).
    pub(crate) fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// Whether to ask the API now for `purpose`; when true, the caller asks and reports
    /// the outcome to [`LookupCache::answered`] or [`LookupCache::failed`].
    pub(crate) fn start(&mut self, purpose: Purpose, now: Instant) -> bool {
        if self.in_flight {
            return false;
        }
        let due = match purpose {
            Purpose::Dial => self
                .answered
                .is_none_or(|t| now.saturating_duration_since(t) >= DIAL_REFRESH_AFTER),
            Purpose::Probe => {
                self.entries.is_empty()
                    || self
                        .asked
                        .is_none_or(|t| now.saturating_duration_since(t) >= PROBE_REFRESH_AFTER)
            }
        };
        if due {
            self.in_flight = true;
            self.asked = Some(now);
        }
        due
    }

    /// The API answered: its list replaces the cached one (it is the authority, also when
    /// the list is shorter).
    pub(crate) fn answered(&mut self, entries: Vec<A>, now: Instant) {
        self.entries = entries;
        self.answered = Some(now);
        self.in_flight = false;
    }

    /// The API failed or timed out: the cached list stays.
    pub(crate) fn failed(&mut self) {
        self.in_flight = false;
    }
}

/// One step of a [`DialPlan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step<A> {
    /// Start dialing this candidate now.
    Dial(A),
    /// Nothing to start: wait for a dial or the lookup to finish, or until this time
    /// (when the next candidate may start alongside the ones in flight).
    Wait(Option<Instant>),
    /// Every candidate failed and the API has nothing new.
    GiveUp(GiveUp),
}

/// Why a dial attempt gave up.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct GiveUp {
    /// Each candidate's failure, in the order they failed.
    pub(crate) dial_errors: Vec<String>,
    /// The API's failure, when it was asked and did not answer.
    pub(crate) lookup_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum LookupState {
    NotAsked,
    Waiting,
    Answered,
    Failed(String),
}

/// One dial attempt over a changing list of candidates: the cached ones are dialed at
/// once, the API's answer is merged in when it arrives (new candidates first in its order,
/// already started ones not again). A candidate starts when nothing is in flight, or
/// `stagger` after the previous one started (so an address that swallows packets delays
/// the next by `stagger`, not by its whole timeout); the first success wins.
#[derive(Debug, Clone)]
pub(crate) struct DialPlan<A> {
    pending: VecDeque<A>,
    started: Vec<A>,
    in_flight: usize,
    last_start: Option<Instant>,
    stagger: Duration,
    lookup: LookupState,
    dial_errors: Vec<String>,
}

impl<A: Clone + PartialEq> DialPlan<A> {
    /// A plan starting from `cached`; `lookup_pending` when an answer from the API is
    /// on its way.
    pub(crate) fn new(cached: &[A], lookup_pending: bool, stagger: Duration) -> DialPlan<A> {
        let mut pending = VecDeque::new();
        for a in cached {
            if !pending.contains(a) {
                pending.push_back(a.clone());
            }
        }
        DialPlan {
            pending,
            started: Vec::new(),
            in_flight: 0,
            last_start: None,
            stagger,
            lookup: if lookup_pending {
                LookupState::Waiting
            } else {
                LookupState::NotAsked
            },
            dial_errors: Vec::new(),
        }
    }

    /// The API answered with `fresh` (best first). Candidates it no longer lists are
    /// dropped unless already started; new ones go first.
    pub(crate) fn lookup_answered(&mut self, fresh: &[A]) {
        self.lookup = LookupState::Answered;
        self.pending.clear();
        for a in fresh {
            if !self.started.contains(a) && !self.pending.contains(a) {
                self.pending.push_back(a.clone());
            }
        }
    }

    /// The API did not answer (error or timeout); the cached candidates remain.
    pub(crate) fn lookup_failed(&mut self, why: String) {
        self.lookup = LookupState::Failed(why);
    }

    /// A started candidate failed.
    pub(crate) fn dial_failed(&mut self, why: String) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.dial_errors.push(why);
    }

    /// What to do at `now`; call until it returns [`Step::Wait`] or [`Step::GiveUp`].
    pub(crate) fn poll(&mut self, now: Instant) -> Step<A> {
        if !self.pending.is_empty() {
            let next_at = self.last_start.map(|t| t + self.stagger);
            if self.in_flight == 0 || next_at.is_none_or(|t| now >= t) {
                let a = self.pending.pop_front().expect("not empty");
                self.started.push(a.clone());
                self.in_flight += 1;
                self.last_start = Some(now);
                return Step::Dial(a);
            }
            return Step::Wait(next_at);
        }
        if self.in_flight > 0 || self.lookup == LookupState::Waiting {
            return Step::Wait(None);
        }
        Step::GiveUp(GiveUp {
            dial_errors: self.dial_errors.clone(),
            lookup_error: match &self.lookup {
                LookupState::Failed(e) => Some(e.clone()),
                _ => None,
            },
        })
    }
}

/// When a session running on its fallback carrier probes the preferred one again: first
/// after `min`, then at growing intervals up to `max` (so a path that stays blocked costs
/// a few connection attempts a minute), each with jitter so several carriers spread out.
#[derive(Debug, Clone)]
pub(crate) struct ProbeSchedule {
    min: Duration,
    max: Duration,
    gap: Duration,
    due: Instant,
}

impl ProbeSchedule {
    /// The first probe `min` after `now`.
    pub(crate) fn new(now: Instant, min: Duration, max: Duration) -> ProbeSchedule {
        ProbeSchedule {
            min,
            max: max.max(min),
            gap: min,
            due: now + min,
        }
    }

    /// When the next probe is due.
    pub(crate) fn due(&self) -> Instant {
        self.due
    }

    /// A probe failed at `now`: the next waits twice as long (up to `max`), scaled by
    /// `jitter` (e.g. 0.75..1.25).
    pub(crate) fn failed(&mut self, now: Instant, jitter: f64) {
        self.gap = (self.gap * 2).min(self.max);
        self.due = now + self.gap.mul_f64(jitter.clamp(0.5, 1.5));
    }

    /// Starts over from `min` (a new fallback carrier).
    pub(crate) fn reset(&mut self, now: Instant) {
        self.gap = self.min;
        self.due = now + self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn a_dial_asks_the_api_unless_it_just_answered_and_never_twice_at_once() {
        let t0 = Instant::now();
        let mut c: LookupCache<u16> = LookupCache::new();
        assert!(c.start(Purpose::Dial, t0), "nothing known: ask");
        assert!(!c.start(Purpose::Dial, t0), "already asking");
        assert!(!c.start(Purpose::Probe, t0), "already asking");
        c.answered(vec![1, 2], t0 + secs(0.2));
        assert_eq!(c.entries(), [1, 2]);
        assert!(
            !c.start(Purpose::Dial, t0 + secs(0.5)),
            "answered moments ago"
        );
        assert!(c.start(Purpose::Dial, t0 + secs(1.3)));
        // A frozen API: the lookup fails, the last answer stays, the next dial asks again.
        c.failed();
        assert_eq!(c.entries(), [1, 2]);
        assert!(c.start(Purpose::Dial, t0 + secs(6.4)));
    }

    #[test]
    fn a_probe_uses_the_last_answer_until_it_is_old() {
        let t0 = Instant::now();
        let mut c: LookupCache<u16> = LookupCache::new();
        assert!(c.start(Purpose::Probe, t0), "nothing known: ask");
        c.answered(vec![7], t0);
        assert!(!c.start(Purpose::Probe, t0 + secs(30.0)));
        assert!(c.start(Purpose::Probe, t0 + secs(61.0)));
        // A failed lookup counts as asked: a probe does not ask a down API every time.
        c.failed();
        assert!(!c.start(Purpose::Probe, t0 + secs(90.0)));
        assert!(c.start(Purpose::Probe, t0 + secs(122.0)));
        // A seed counts as an answer.
        let mut s: LookupCache<u16> = LookupCache::new();
        s.seed(vec![3], t0);
        assert!(!s.start(Purpose::Probe, t0 + secs(5.0)));
        assert!(!s.start(Purpose::Dial, t0 + secs(0.5)));
    }

    #[test]
    fn cached_candidates_are_dialed_before_the_api_answers() {
        let t0 = Instant::now();
        let mut p = DialPlan::new(&[1u16, 2], true, secs(0.25));
        assert_eq!(p.poll(t0), Step::Dial(1), "no waiting for the API");
        assert_eq!(p.poll(t0), Step::Wait(Some(t0 + secs(0.25))));
        assert_eq!(p.poll(t0 + secs(0.25)), Step::Dial(2), "staggered");
        assert_eq!(p.poll(t0 + secs(0.3)), Step::Wait(None));
        p.dial_failed("1: no answer".into());
        p.dial_failed("2: refused".into());
        // Both failed but the API is still being asked: wait for it.
        assert_eq!(p.poll(t0 + secs(3.0)), Step::Wait(None));
        p.lookup_failed("the API did not answer within 5 s".into());
        assert_eq!(
            p.poll(t0 + secs(5.0)),
            Step::GiveUp(GiveUp {
                dial_errors: vec!["1: no answer".into(), "2: refused".into()],
                lookup_error: Some("the API did not answer within 5 s".into()),
            })
        );
    }

    #[test]
    fn new_candidates_from_the_api_are_dialed_as_soon_as_they_arrive() {
        let t0 = Instant::now();
        let mut p = DialPlan::new(&[1u16, 2, 3], true, secs(0.25));
        assert_eq!(p.poll(t0), Step::Dial(1));
        // The agent moved: the API lists 4 and 1; 2 and 3 are gone, 1 is not dialed twice.
        p.lookup_answered(&[4, 1]);
        assert_eq!(p.poll(t0 + secs(0.1)), Step::Wait(Some(t0 + secs(0.25))));
        assert_eq!(p.poll(t0 + secs(0.25)), Step::Dial(4));
        assert_eq!(p.poll(t0 + secs(0.5)), Step::Wait(None));
        p.dial_failed("1".into());
        p.dial_failed("4".into());
        assert_eq!(
            p.poll(t0 + secs(1.0)),
            Step::GiveUp(GiveUp {
                dial_errors: vec!["1".into(), "4".into()],
                lookup_error: None,
            })
        );
    }

    #[test]
    fn without_a_cache_the_dial_waits_for_the_api() {
        let t0 = Instant::now();
        let mut p: DialPlan<u16> = DialPlan::new(&[], true, secs(0.25));
        assert_eq!(p.poll(t0), Step::Wait(None));
        p.lookup_answered(&[9, 9, 8]);
        assert_eq!(p.poll(t0), Step::Dial(9));
        // A failed dial frees the next one at once, without waiting for the stagger.
        p.dial_failed("9".into());
        assert_eq!(p.poll(t0 + secs(0.01)), Step::Dial(8));
        let mut q: DialPlan<u16> = DialPlan::new(&[], false, secs(0.25));
        assert_eq!(q.poll(t0), Step::GiveUp(GiveUp::default()));
    }

    #[test]
    fn probes_back_off_to_the_cap_and_start_over() {
        let t0 = Instant::now();
        let mut s = ProbeSchedule::new(t0, secs(5.0), secs(15.0));
        assert_eq!(s.due(), t0 + secs(5.0));
        s.failed(t0 + secs(5.0), 1.0);
        assert_eq!(s.due(), t0 + secs(15.0));
        s.failed(t0 + secs(15.0), 1.0);
        assert_eq!(s.due(), t0 + secs(30.0), "capped at 15 s");
        s.failed(t0 + secs(30.0), 1.2);
        assert_eq!(s.due(), t0 + secs(48.0));
        s.reset(t0 + secs(50.0));
        assert_eq!(s.due(), t0 + secs(55.0));
    }
}
