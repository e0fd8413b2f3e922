//! Putting a replaced Service back, at the edge: the relay does it whenever it stops
//! (whatever stops it), the client on Ctrl-C.
//!
//! The client swaps the Service's selector to the session's relay
//! ([`crate::replace::swap`]); the garbage collector cannot undo a patch, so
//! the relay does, with its own ServiceAccount (a Role with `get` and `patch` on that one
//! Service, `resourceNames: [NAME]`, owned by the session's Job). [`Restorer::restore`]
//! reads the Service, decides with [`crate::replace::restore`] and sends the
//! patch, reading and deciding again when the Service changed in between (422), for at
//! most `timeout` in all. It never fails the relay: it logs what it did.
//!
//! Before the relay opens its carrier port (the pod's readiness), [`Restorer::wait_until_able`]
//! checks with a dry-run patch that the relay may read and patch the Service, so a client
//! only ever swaps a Service that its relay is able to restore.

use std::time::Duration;

use crate::replace::{self, RestoreDecision, Selector};
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::{Patch, PatchParams};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The field manager of the relay's patches (shown in the Service's `managedFields`).
pub const FIELD_MANAGER: &str = "kubelan-relay";

/// Which Service to put back, for which session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreTarget {
    /// The Service's namespace (the relay pod's own).
    pub namespace: String,
    /// The Service's name.
    pub service: String,
    /// The session whose selector the swap set.
    pub session: String,
    /// The selector before the swap, when the Job's arguments carry it (preferred to the
    /// Service's `kubelan.io/original` annotation, which anyone who may edit the Service
    /// may also edit).
    pub original: Option<Selector>,
    /// How long a restore may take, retries included.
    pub timeout: Duration,
}

/// How a restore ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreOutcome {
    /// The Service was read and, where the decision called for it, patched.
    Done(RestoreDecision),
    /// The Service does not exist (deleted, or its namespace is going away).
    Gone,
    /// No attempt succeeded within the timeout.
    Failed {
        /// The last attempt's error.
        last_error: String,
    },
}

/// Restores one replaced Service.
#[derive(Clone)]
pub struct Restorer {
    api: Api<Service>,
    target: RestoreTarget,
    manager: &'static str,
}

/// Sends a JSON patch kubelan built ([`replace::swap`], [`replace::restore`]) to the
/// Service `name`, as field manager `manager`.
///
/// # Errors
/// The API server's answer (422 when a `test` failed: the Service changed since it was
/// read).
pub async fn send_json_patch(
    api: &Api<Service>,
    name: &str,
    manager: &str,
    patch: &serde_json::Value,
) -> Result<Service, kube::Error> {
    let patch: json_patch::Patch =
        serde_json::from_value(patch.clone()).map_err(kube::Error::SerdeError)?;
    let pp = PatchParams {
        field_manager: Some(manager.into()),
        ..PatchParams::default()
    };
    api.patch(name, &pp, &Patch::Json::<()>(patch)).await
}

impl std::fmt::Debug for Restorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Restorer")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

fn api_error(doing: &str, e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.code == 401 || s.code == 403 => format!(
            "{doing}: {} {} (the relay's ServiceAccount needs get and patch on this Service; was its Role or RoleBinding deleted?)",
            s.code, s.message
        ),
        kube::Error::Api(s) => format!("{doing}: {} {}", s.code, s.message),
        other => format!("{doing}: {other}"),
    }
}

impl Restorer {
    /// A restorer that talks to the API server through `client`.
    pub fn new(client: kube::Client, target: RestoreTarget) -> Restorer {
        Restorer {
            api: Api::namespaced(client, &target.namespace),
            target,
            manager: FIELD_MANAGER,
        }
    }

    /// The same, patching as field manager `manager` (the client uses kubelan's own).
    pub fn with_field_manager(mut self, manager: &'static str) -> Restorer {
        self.manager = manager;
        self
    }

    /// What it restores.
    pub fn target(&self) -> &RestoreTarget {
        &self.target
    }

    fn name(&self) -> String {
        format!("{}/{}", self.target.namespace, self.target.service)
    }

    /// Whether the relay may read and patch the Service: a GET, then a dry-run JSON patch
    /// that only tests the name (nothing is written).
    ///
    /// # Errors
    /// The API server's answer, as one sentence.
    pub async fn check(&self) -> Result<(), String> {
        let name = &self.target.service;
        self.api
            .get(name)
            .await
            .map_err(|e| api_error(&format!("reading Service {}", self.name()), &e))?;
        let probe = json_patch(&serde_json::json!([
            {"op": "test", "path": "/metadata/name", "value": name}
        ]))?;
        let pp = PatchParams {
            field_manager: Some(self.manager.into()),
            ..PatchParams::default()
        }
        .dry_run();
        self.api
            .patch(name, &pp, &Patch::Json::<()>(probe))
            .await
            .map_err(|e| api_error(&format!("patching Service {} (dry run)", self.name()), &e))?;
        Ok(())
    }

    /// Waits until [`check`](Self::check) passes (the session's Role and RoleBinding may
    /// be created just after the relay starts), for at most `limit` or until `stop`.
    ///
    /// # Errors
    /// The last check's error when it never passed.
    pub async fn wait_until_able(
        &self,
        limit: Duration,
        stop: &CancellationToken,
    ) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        let mut logged = false;
        loop {
            let e = match self.check().await {
                Ok(()) => {
                    tracing::info!(service = %self.name(), "the relay may restore the Service");
                    return Ok(());
                }
                Err(e) => e,
            };
            if !logged {
                tracing::warn!(error = %e, "cannot restore the Service yet; retrying");
                logged = true;
            }
            let pause = Duration::from_millis(500);
            if Instant::now() + pause >= deadline {
                return Err(e);
            }
            tokio::select! {
                () = stop.cancelled() => return Err(e),
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Puts the Service back if the session's selector is still on it, within the target's
    /// timeout, and logs what it did. Idempotent.
    pub async fn restore(&self) -> RestoreOutcome {
        let deadline = Instant::now() + self.target.timeout;
        let mut pause = Duration::from_millis(100);
        let outcome = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let last_error = match tokio::time::timeout(left, self.attempt()).await {
                Ok(Ok(outcome)) => break outcome,
                Ok(Err(e)) => e,
                Err(_) => "the API server did not answer in time".to_string(),
            };
            tracing::debug!(error = %last_error, "restore attempt failed");
            if Instant::now() + pause >= deadline {
                break RestoreOutcome::Failed { last_error };
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        };
        self.log(&outcome);
        outcome
    }

    fn log(&self, outcome: &RestoreOutcome) {
        let (service, session) = (self.name(), &self.target.session);
        match outcome {
            RestoreOutcome::Done(d) => {
                let line = d.describe(&service, session);
                match d {
                    RestoreDecision::Restore { .. }
                    | RestoreDecision::AlreadyRestored
                    | RestoreDecision::NotOurs { .. } => tracing::info!("{line}"),
                    RestoreDecision::ChangedByOthers { .. } => tracing::warn!("{line}"),
                    RestoreDecision::NoOriginal { .. } => tracing::error!("{line}"),
                }
            }
            RestoreOutcome::Gone => {
                tracing::info!("Service {service} no longer exists; nothing to restore");
            }
            RestoreOutcome::Failed { last_error } => tracing::error!(
                "could not restore Service {service} (its selector may still be {}={session}): {last_error}; run `kubelan replace` again or restore it by hand from its {} annotation",
                replace::SESSION_LABEL,
                replace::ANNOTATION_ORIGINAL
            ),
        }
    }

    /// One read, decision and patch; `Err` is worth another try.
    async fn attempt(&self) -> Result<RestoreOutcome, String> {
        let name = &self.target.service;
        let svc = match self.api.get(name).await {
            Ok(s) => s,
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(RestoreOutcome::Gone),
            Err(e) => return Err(api_error("reading the Service", &e)),
        };
        let plan = replace::restore(&svc, &self.target.session, self.target.original.as_ref());
        let Some(patch) = plan.patch else {
            return Ok(RestoreOutcome::Done(plan.decision));
        };
        match send_json_patch(&self.api, name, self.manager, &patch).await {
            Ok(_) => Ok(RestoreOutcome::Done(plan.decision)),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(RestoreOutcome::Gone),
            // A `test` failed: the Service changed since it was read. Decide again.
            Err(kube::Error::Api(s)) if s.code == 422 => Err(format!(
                "the Service changed while it was being restored ({})",
                s.message
            )),
            Err(e) => Err(api_error("patching the Service", &e)),
        }
    }
}

fn json_patch(v: &serde_json::Value) -> Result<json_patch::Patch, String> {
    serde_json::from_value(v.clone()).map_err(|e| format!("a restore patch kubelan built: {e}"))
}
