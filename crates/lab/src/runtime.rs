//! State shared by the lab daemon's components, and the bridge the API server uses to reach
//! pods (port-forward dials and log files).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use kubelan_apisim::{Authenticator, PodBackend, Store};
use tokio_util::sync::CancellationToken;

use crate::state::{Journal, LabPaths, LabRecord};

/// Where a running pod lives.
#[derive(Debug, Clone)]
pub struct PodPlace {
    /// Pod UID.
    pub uid: String,
    /// Its network namespace.
    pub netns: PathBuf,
    /// Its state directory (logs).
    pub dir: PathBuf,
    /// PID of its sandbox holder.
    pub holder: u32,
    /// Its IP.
    pub ip: Ipv4Addr,
}

/// Everything the daemon's components share.
#[derive(Debug)]
pub struct LabContext {
    /// State paths.
    pub paths: LabPaths,
    /// Configuration and facts from `lab up`.
    pub record: LabRecord,
    /// The API object store.
    pub store: Arc<Store>,
    /// Token registry.
    pub auth: Arc<Authenticator>,
    /// Cluster CA (PEM).
    pub ca_pem: String,
    /// Cancelled when the daemon stops.
    pub shutdown: CancellationToken,
    /// Crash journal.
    pub journal: Mutex<Journal>,
    /// Running pods by (namespace, name).
    pub pods: Mutex<HashMap<(String, String), PodPlace>>,
}

impl LabContext {
    /// Records a started process in the journal (best effort: a failure is logged).
    pub fn journal_process(&self, pid: u32, role: &str) {
        let mut j = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = j.record_process(pid, role) {
            tracing::warn!(error = %e, "cannot write the lab journal");
        }
    }

    /// Records a network namespace in the journal before it is created.
    ///
    /// # Errors
    /// When the journal cannot be written (then the namespace must not be created).
    pub fn journal_netns(&self, name: &str) -> anyhow::Result<()> {
        let mut j = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        j.record(&crate::state::JournalEntry::Netns {
            name: name.to_string(),
        })?;
        Ok(())
    }

    /// Where a pod runs, if it runs here.
    pub fn pod(&self, ns: &str, name: &str) -> Option<PodPlace> {
        self.pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }
}

/// The API server's view of the pods: dial into their namespaces, read their logs.
#[derive(Debug)]
pub struct LabPodBackend(pub Arc<LabContext>);

impl PodBackend for LabPodBackend {
    fn dial(
        &self,
        namespace: &str,
        pod: &str,
        port: u16,
    ) -> BoxFuture<'static, std::io::Result<tokio::net::TcpStream>> {
        let place = self.0.pod(namespace, pod);
        let who = format!("{namespace}/{pod}");
        Box::pin(async move {
            let place = place.ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("pod {who} has no sandbox on any lab node"),
                )
            })?;
            // The kubelet connects to localhost inside the pod's network namespace.
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            crate::netops::dial(&place.netns, addr, Duration::from_secs(5)).await
        })
    }

    fn log_file(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        previous: bool,
    ) -> Option<PathBuf> {
        let place = self.0.pod(namespace, pod)?;
        let current = place.dir.join(format!("{container}.log"));
        let previous_log = place.dir.join(format!("{container}.previous.log"));
        // A container waiting to restart has no current log yet: like the kubelet, show
        // the instance that just ended.
        [
            if previous { None } else { Some(current) },
            Some(previous_log),
        ]
        .into_iter()
        .flatten()
        .find(|f| f.exists())
    }
}
