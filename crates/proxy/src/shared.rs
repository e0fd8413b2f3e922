//! What every client task shares: the connector, the configuration, the counters and the
//! failed-login throttling.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;
use tracing::warn;

use crate::limiter::{Admission, LoginLimiter, LoginOutcome};
use crate::pending::{Every, Pending};
use crate::stats::Counters;
use crate::{Connector, Credentials, ProxyConfig};

/// How often failed logins are summarised in the log (one line per interval at most,
/// plus the first failure of an interval on its own).
pub(crate) const AUTH_REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// What every client task shares.
pub(crate) struct Shared {
    pub(crate) connector: Arc<dyn Connector>,
    pub(crate) config: ProxyConfig,
    pub(crate) counters: Counters,
    /// Failed-login throttling (consulted only when credentials are required).
    pub(crate) limiter: Mutex<LoginLimiter>,
    /// Failed logins whose answer is being held back (bounded, so that holding answers
    /// cannot pin an unbounded number of sockets).
    pub(crate) held: tokio::sync::Semaphore,
    /// Handshakes open per source.
    pub(crate) pending: Arc<Pending>,
    /// The warning about connections closed at accept (client limits), once per interval.
    pub(crate) busy_log: Every,
}

/// The clock the limiter runs on (tokio's, so paused-time tests control it).
pub(crate) fn now() -> std::time::Instant {
    Instant::now().into_std()
}

impl Shared {
    fn limiter(&self) -> MutexGuard<'_, LoginLimiter> {
        self.limiter.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a connection from `peer` may be served at all (no: its source failed to
    /// log in too often and is waiting out a delay or a lockout).
    pub(crate) fn admit(&self, peer: SocketAddr) -> bool {
        if self.config.auth.is_none() {
            return true;
        }
        let admission = self.limiter().admit(peer.ip(), now());
        match admission {
            Admission::Allowed => true,
            Admission::Throttled { .. } => {
                self.counters.throttled();
                false
            }
        }
    }

    /// Checks credentials presented by `peer` through the limiter: unevaluated while
    /// the source is blocked, and failures recorded, counted and logged in aggregate.
    /// With no credentials configured every login is accepted.
    pub(crate) fn login(
        &self,
        peer: SocketAddr,
        username: &[u8],
        check: impl FnOnce(&Credentials) -> bool,
    ) -> LoginOutcome {
        let Some(creds) = self.config.auth.as_ref() else {
            return LoginOutcome::Accepted;
        };
        let outcome = self.limiter().try_login(peer.ip(), now(), || check(creds));
        match outcome {
            LoginOutcome::Accepted => {}
            LoginOutcome::Throttled { .. } => self.counters.throttled(),
            LoginOutcome::Rejected { announce, .. } => {
                self.counters.auth_failure();
                if announce {
                    // The username is the client's text: Debug-escape it for the log.
                    let user = String::from_utf8_lossy(username);
                    let user: String = user.chars().take(64).collect();
                    warn!(
                        %peer,
                        user = ?user,
                        "proxy: failed login (wrong username or password); further failures are summarised every {} s",
                        AUTH_REPORT_INTERVAL.as_secs()
                    );
                }
            }
        }
        outcome
    }

    /// Waits `hold` before a failure is answered, when few answers are held already (a
    /// client that waits for its answer is slowed; the source is blocked either way).
    pub(crate) async fn hold_failure(&self, hold: Duration) {
        if hold.is_zero() {
            return;
        }
        if let Ok(_permit) = self.held.try_acquire() {
            tokio::time::sleep(hold).await;
        }
    }

    /// Logs what the limiter saw since the last report.
    pub(crate) fn report_logins(&self) {
        let report = self.limiter().take_report(now());
        if let Some(report) = report {
            warn!("proxy: {report}");
        }
    }
}
