//! Keeps a [`ClusterNames`] current from the Kubernetes API.
//!
//! [`run_watchers`] watches Services, EndpointSlices and Pods in all namespaces with
//! `kube::runtime::watcher`. Each object is reduced to what the cache keeps as soon as it is
//! decoded, so full Pod objects never accumulate. A (re)list is buffered and swapped in at
//! its `InitDone`, so a relist never leaves the cache half empty; failed watches are retried
//! with the watcher's default backoff and only logged.
//!
//! RBAC: `list` and `watch` on `services`, `pods` and `discovery.k8s.io` `endpointslices`,
//! cluster-wide.

use std::fmt::Debug;
use std::sync::{Arc, PoisonError, RwLock};

use futures::{Stream, StreamExt as _};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt as _, watcher as watch_stream};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::names::{self, ClusterNames, PodEntry, Reduced, ServiceEntry, SliceEntry};

/// Why [`run_watchers`] stopped before shutdown.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// A watch stream ended. `kube::runtime::watcher` streams are endless (errors are
    /// retried), so this is a bug or a runtime shutting down; restart the watchers.
    #[error("the {kind} watch ended unexpectedly; restart the watchers")]
    StreamEnded {
        /// The kind whose watch ended (`services`, `endpointslices`, `pods`).
        kind: &'static str,
    },
}

/// One change to the cache, with the object already reduced.
enum Change<T> {
    /// A (re)list starts: buffer until `ListDone`.
    Relist,
    /// An object of the listing.
    Listed(Reduced<T>),
    /// The listing is complete: swap it in.
    ListDone,
    /// An object was added or modified.
    Applied(Reduced<T>),
    /// An object was deleted.
    Deleted(Reduced<T>),
    /// An object without namespace or name.
    Skip,
}

/// How the cache stores one kind.
trait Kind: Sized {
    const NAME: &'static str;
    fn put(names: &mut ClusterNames, reduced: Reduced<Self>);
    fn delete(names: &mut ClusterNames, reduced: &Reduced<Self>);
    fn replace(names: &mut ClusterNames, listing: Vec<Reduced<Self>>);
}

impl Kind for ServiceEntry {
    const NAME: &'static str = "services";
    fn put(names: &mut ClusterNames, reduced: Reduced<Self>) {
        names.put_service(reduced);
    }
    fn delete(names: &mut ClusterNames, reduced: &Reduced<Self>) {
        let (ns, name) = reduced.key();
        names.delete_service(ns, name);
    }
    fn replace(names: &mut ClusterNames, listing: Vec<Reduced<Self>>) {
        names.replace_services(listing);
    }
}

impl Kind for SliceEntry {
    const NAME: &'static str = "endpointslices";
    fn put(names: &mut ClusterNames, reduced: Reduced<Self>) {
        names.put_slice(reduced);
    }
    fn delete(names: &mut ClusterNames, reduced: &Reduced<Self>) {
        let (ns, name) = reduced.key();
        names.delete_endpoint_slice(ns, name);
    }
    fn replace(names: &mut ClusterNames, listing: Vec<Reduced<Self>>) {
        names.replace_slices(listing);
    }
}

impl Kind for PodEntry {
    const NAME: &'static str = "pods";
    fn put(names: &mut ClusterNames, reduced: Reduced<Self>) {
        names.put_pod(reduced);
    }
    fn delete(names: &mut ClusterNames, reduced: &Reduced<Self>) {
        let (ns, name) = reduced.key();
        names.delete_pod(ns, name);
    }
    fn replace(names: &mut ClusterNames, listing: Vec<Reduced<Self>>) {
        names.replace_pods(listing);
    }
}

/// The watch of one kind: its buffered listing and whether it was listed once.
struct KindWatch<T> {
    listing: Vec<Reduced<T>>,
    listed: bool,
}

impl<T: Kind> KindWatch<T> {
    fn new() -> Self {
        Self {
            listing: Vec::new(),
            listed: false,
        }
    }

    /// Applies one stream item; `Err` when the stream ended.
    fn handle(
        &mut self,
        names: &RwLock<ClusterNames>,
        item: Option<Result<Change<T>, watcher::Error>>,
    ) -> Result<(), WatchError> {
        let change = match item {
            None => return Err(WatchError::StreamEnded { kind: T::NAME }),
            Some(Err(error)) => {
                tracing::warn!(kind = T::NAME, %error, "watch failed; retrying with backoff");
                return Ok(());
            }
            Some(Ok(change)) => change,
        };
        let write = || names.write().unwrap_or_else(PoisonError::into_inner);
        match change {
            Change::Relist => self.listing.clear(),
            Change::Listed(reduced) => self.listing.push(reduced),
            Change::ListDone => {
                let listing = std::mem::take(&mut self.listing);
                let count = listing.len();
                T::replace(&mut write(), listing);
                self.listed = true;
                tracing::debug!(kind = T::NAME, count, "listing applied");
            }
            Change::Applied(reduced) => T::put(&mut write(), reduced),
            Change::Deleted(reduced) => T::delete(&mut write(), &reduced),
            Change::Skip => {}
        }
        Ok(())
    }
}

/// The watch stream of `K`, reduced to the cache's form as soon as objects arrive.
fn changes<K, T>(
    api: Api<K>,
    reduce: fn(&K) -> Option<Reduced<T>>,
) -> impl Stream<Item = Result<Change<T>, watcher::Error>> + Send
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    T: Send + 'static,
{
    watch_stream(api, watcher::Config::default())
        .default_backoff()
        .map(move |item| {
            item.map(|event| match event {
                Event::Init => Change::Relist,
                Event::InitApply(o) => reduce(&o).map_or(Change::Skip, Change::Listed),
                Event::InitDone => Change::ListDone,
                Event::Apply(o) => reduce(&o).map_or(Change::Skip, Change::Applied),
                Event::Delete(o) => reduce(&o).map_or(Change::Skip, Change::Deleted),
            })
        })
}

/// Keeps `names` current until `shutdown` is cancelled.
///
/// Watches Services, EndpointSlices and Pods in all namespaces. Once all three have been
/// listed, the cache is marked [complete](ClusterNames::is_complete) and `ready` becomes
/// true (it stays true through later relists, which swap in atomically). Watch errors
/// (API unreachable, RBAC denied, expired resource versions) are logged and retried with
/// backoff; they never end this function.
///
/// # Errors
///
/// [`WatchError::StreamEnded`] if a watch stream ends, which `kube`'s watcher never does
/// on its own.
pub async fn run_watchers(
    client: Client,
    names: Arc<RwLock<ClusterNames>>,
    ready: watch::Sender<bool>,
    shutdown: CancellationToken,
) -> Result<(), WatchError> {
    let mut services = std::pin::pin!(changes(
        Api::<Service>::all(client.clone()),
        names::reduce_service
    ));
    let mut slices = std::pin::pin!(changes(
        Api::<EndpointSlice>::all(client.clone()),
        names::reduce_slice
    ));
    let mut pods = std::pin::pin!(changes(Api::<Pod>::all(client), names::reduce_pod));
    let mut service_watch = KindWatch::<ServiceEntry>::new();
    let mut slice_watch = KindWatch::<SliceEntry>::new();
    let mut pod_watch = KindWatch::<PodEntry>::new();
    let mut announced = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            item = services.next() => service_watch.handle(&names, item)?,
            item = slices.next() => slice_watch.handle(&names, item)?,
            item = pods.next() => pod_watch.handle(&names, item)?,
        }
        if !announced && service_watch.listed && slice_watch.listed && pod_watch.listed {
            announced = true;
            let counts = {
                let mut names = names.write().unwrap_or_else(PoisonError::into_inner);
                names.set_complete(true);
                names.counts()
            };
            ready.send_replace(true);
            tracing::info!(
                services = counts.0,
                endpointslices = counts.1,
                pods = counts.2,
                "cluster DNS cache synced"
            );
        }
    }
}
