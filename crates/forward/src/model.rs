//! The state a forward keeps between watch events, sans IO: mirrors of the watched objects,
//! and for each forwarded port the pod new connections go to ([`PortState`]).
//!
//! Watch events go into a [`Mirror`]; after each one the owner asks [`Selection::update`]
//! for the new states, giving it the candidates [`crate::resolve`] computed and the current
//! time. A pod a connection just failed on ([`Selection::failed`]) is avoided for
//! [`AVOID_FOR`] when another candidate exists, which covers the moments between a pod going
//! away and the watch saying so.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Resource;

use crate::resolve::{self, Backend, Candidate};
use crate::spec::RemotePort;

/// How long a pod that failed a connection is avoided.
pub const AVOID_FOR: Duration = Duration::from_secs(5);

/// Where new connections of one forwarded port go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortState {
    /// Not known yet (the first listing has not arrived).
    Starting,
    /// To this pod and port.
    Ready(Backend),
    /// Nowhere right now, and why (connections wait a while for a pod).
    Waiting(String),
}

impl PortState {
    /// The backend, when there is one.
    pub fn backend(&self) -> Option<&Backend> {
        match self {
            PortState::Ready(b) => Some(b),
            _ => None,
        }
    }
}

/// One watch event, as [`Mirror`] takes it (mirrors `kube::runtime::watcher::Event`).
#[derive(Debug, Clone)]
pub enum Change<K> {
    /// A (re)list starts.
    Relist,
    /// An object of the (re)list.
    Listed(K),
    /// The (re)list is complete.
    ListDone,
    /// Added or modified.
    Applied(K),
    /// Deleted.
    Deleted(K),
}

impl<K> From<kube::runtime::watcher::Event<K>> for Change<K> {
    fn from(e: kube::runtime::watcher::Event<K>) -> Self {
        use kube::runtime::watcher::Event;
        match e {
            Event::Init => Change::Relist,
            Event::InitApply(k) => Change::Listed(k),
            Event::InitDone => Change::ListDone,
            Event::Apply(k) => Change::Applied(k),
            Event::Delete(k) => Change::Deleted(k),
        }
    }
}

/// The objects of one watch, by name. A relist is buffered and swapped in whole, so it never
/// looks half empty.
#[derive(Debug, Clone)]
pub struct Mirror<K> {
    objects: BTreeMap<String, K>,
    relist: Option<BTreeMap<String, K>>,
    synced: bool,
}

impl<K> Default for Mirror<K> {
    fn default() -> Self {
        Mirror {
            objects: BTreeMap::new(),
            relist: None,
            synced: false,
        }
    }
}

impl<K: Resource> Mirror<K> {
    /// Applies one event; says whether the visible objects may have changed.
    pub fn apply(&mut self, change: Change<K>) -> bool {
        let name = |k: &K| k.meta().name.clone().unwrap_or_default();
        match change {
            Change::Relist => {
                self.relist = Some(BTreeMap::new());
                false
            }
            Change::Listed(k) => {
                let n = name(&k);
                match &mut self.relist {
                    Some(r) => {
                        r.insert(n, k);
                        false
                    }
                    None => {
                        self.objects.insert(n, k);
                        true
                    }
                }
            }
            Change::ListDone => {
                if let Some(r) = self.relist.take() {
                    self.objects = r;
                }
                self.synced = true;
                true
            }
            Change::Applied(k) => {
                self.objects.insert(name(&k), k);
                true
            }
            Change::Deleted(k) => self.objects.remove(&name(&k)).is_some(),
        }
    }

    /// Whether a complete listing has arrived.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// The object named `name`.
    pub fn get(&self, name: &str) -> Option<&K> {
        self.objects.get(name)
    }

    /// Every object, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &K)> {
        self.objects.iter()
    }

    /// How many objects there are.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

/// The EndpointSlices of `service` among `slices` (label `kubernetes.io/service-name`).
pub fn slices_of<'a>(
    slices: &'a Mirror<EndpointSlice>,
    service: &'a str,
) -> impl Iterator<Item = &'a EndpointSlice> + 'a {
    slices.iter().map(|(_, s)| s).filter(move |s| {
        s.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
            .is_some_and(|n| n == service)
    })
}

/// Candidates for each wanted port of a Service, or why there are none.
pub fn service_candidates(
    namespace: &str,
    name: &str,
    svc: Option<&Service>,
    slices: &Mirror<EndpointSlice>,
    wanted: &[RemotePort],
) -> Vec<Result<Vec<Candidate>, String>> {
    wanted
        .iter()
        .map(|w| {
            let Some(svc) = svc else {
                return Err(format!("Service {namespace}/{name} does not exist (deleted?)"));
            };
            let port = resolve::service_port(svc, w).map_err(|e| e.to_string())?;
            let c = resolve::service_candidates(&port, slices_of(slices, name));
            if !c.is_empty() {
                return Ok(c);
            }
            let not_pods = slices_of(slices, name)
                .flat_map(|s| s.endpoints.iter())
                .any(|e| e.target_ref.as_ref().and_then(|t| t.kind.as_deref()) != Some("Pod"));
            Err(if not_pods {
                format!(
                    "Service {namespace}/{name} has endpoints that are not pods (port-forward needs a pod)"
                )
            } else {
                format!(
                    "no ready pod behind Service {namespace}/{name} port {}",
                    port.port
                )
            })
        })
        .collect()
}

/// Candidates for each wanted port among `pods` (`what` names them in messages:
/// `pod default/x`, `deployment default/api`).
pub fn pod_candidates(
    what: &str,
    pods: &Mirror<Pod>,
    wanted: &[RemotePort],
) -> Vec<Result<Vec<Candidate>, String>> {
    wanted
        .iter()
        .map(|w| {
            let c = resolve::pod_candidates(pods.iter().map(|(_, p)| p), w);
            if !c.is_empty() {
                return Ok(c);
            }
            Err(if pods.is_empty() {
                format!("{what}: no such pod (yet)")
            } else if let Some((_, p)) = pods
                .iter()
                .find(|(_, p)| resolve::pod_use(p) != resolve::PodUse::Unusable)
            {
                match resolve::container_port(p.spec.as_ref(), what, w) {
                    Err(e) => e.to_string(),
                    Ok(_) => format!("{what}: no running pod"),
                }
            } else {
                let phases: Vec<String> = pods
                    .iter()
                    .map(|(n, p)| {
                        let phase = if p.metadata.deletion_timestamp.is_some() {
                            "Terminating"
                        } else {
                            p.status
                                .as_ref()
                                .and_then(|s| s.phase.as_deref())
                                .unwrap_or("Pending")
                        };
                        format!("{n} {phase}")
                    })
                    .collect();
                format!("{what}: no running pod ({})", phases.join(", "))
            })
        })
        .collect()
}

/// The current choice for each port of one forward, and the pods that failed recently.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    current: Vec<PortState>,
    failed: HashMap<String, Instant>,
}

impl Selection {
    /// A selection for `ports` ports, all [`PortState::Starting`].
    pub fn new(ports: usize) -> Selection {
        Selection {
            current: vec![PortState::Starting; ports],
            failed: HashMap::new(),
        }
    }

    /// Records that a connection to `pod` failed at `now`.
    pub fn failed(&mut self, pod: &str, now: Instant) {
        self.failed.insert(pod.to_string(), now + AVOID_FOR);
    }

    /// When the earliest avoidance ends (then the choice may change back).
    pub fn next_expiry(&self) -> Option<Instant> {
        self.failed.values().min().copied()
    }

    /// Computes the new states from fresh candidates; returns the indices that changed.
    pub fn update(
        &mut self,
        candidates: &[Result<Vec<Candidate>, String>],
        now: Instant,
    ) -> Vec<usize> {
        self.failed.retain(|_, until| *until > now);
        let mut changed = Vec::new();
        for (i, c) in candidates.iter().enumerate() {
            if i >= self.current.len() {
                self.current.push(PortState::Starting);
            }
            let next = match c {
                Err(why) => PortState::Waiting(why.clone()),
                Ok(c) => match resolve::choose(self.current[i].backend(), c, |p| {
                    self.failed.contains_key(p)
                }) {
                    Some(b) => PortState::Ready(b),
                    None => PortState::Waiting("no pod".into()),
                },
            };
            if next != self.current[i] {
                self.current[i] = next;
                changed.push(i);
            }
        }
        changed
    }

    /// The state of port `i`.
    pub fn state(&self, i: usize) -> &PortState {
        self.current.get(i).unwrap_or(&PortState::Starting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc() -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
        }))
        .unwrap()
    }

    fn slice(name: &str, pods: &[(&str, bool)]) -> EndpointSlice {
        let eps: Vec<_> = pods
            .iter()
            .map(|(p, ready)| json!({"addresses": ["10.0.0.1"], "conditions": {"ready": ready}, "targetRef": {"kind": "Pod", "name": p}}))
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}], "endpoints": eps
        }))
        .unwrap()
    }

    #[test]
    fn relist_is_swapped_in_whole() {
        let mut m: Mirror<EndpointSlice> = Mirror::default();
        assert!(!m.synced());
        m.apply(Change::Relist);
        assert!(!m.apply(Change::Listed(slice("a", &[]))));
        assert!(m.is_empty());
        assert!(m.apply(Change::ListDone));
        assert!(m.synced() && m.len() == 1);
        m.apply(Change::Relist);
        m.apply(Change::Listed(slice("b", &[])));
        assert!(
            m.get("a").is_some(),
            "old listing stays until the new one is done"
        );
        m.apply(Change::ListDone);
        assert!(m.get("a").is_none() && m.get("b").is_some());
        assert!(m.apply(Change::Deleted(slice("b", &[]))));
        assert!(!m.apply(Change::Deleted(slice("b", &[]))));
    }

    #[test]
    fn follows_pods_as_they_are_replaced() {
        let t0 = Instant::now();
        let s = svc();
        let mut slices: Mirror<EndpointSlice> = Mirror::default();
        let wanted = [RemotePort::Number(80)];
        let mut sel = Selection::new(1);
        let step = |slices: &Mirror<EndpointSlice>, sel: &mut Selection, now| {
            let c = service_candidates("default", "web", Some(&s), slices, &wanted);
            sel.update(&c, now);
            sel.state(0).clone()
        };
        assert!(
            matches!(step(&slices, &mut sel, t0), PortState::Waiting(w) if w.contains("no ready pod"))
        );
        slices.apply(Change::Applied(slice(
            "x",
            &[("web-a", true), ("web-b", true)],
        )));
        let b = |p: &str| {
            PortState::Ready(Backend {
                pod: p.into(),
                port: 8080,
            })
        };
        assert_eq!(step(&slices, &mut sel, t0), b("web-a"));
        // web-a is deleted: not ready any more; the choice moves to web-b and stays there
        // when web-a's replacement (web-c) becomes ready.
        slices.apply(Change::Applied(slice(
            "x",
            &[("web-a", false), ("web-b", true)],
        )));
        assert_eq!(step(&slices, &mut sel, t0), b("web-b"));
        slices.apply(Change::Applied(slice(
            "x",
            &[("web-b", true), ("web-c", true)],
        )));
        assert_eq!(step(&slices, &mut sel, t0), b("web-b"));
        // A connection to web-b fails before the watch says anything: avoid it for a while.
        sel.failed("web-b", t0);
        assert_eq!(step(&slices, &mut sel, t0), b("web-c"));
        assert_eq!(sel.next_expiry(), Some(t0 + AVOID_FOR));
        // After the avoidance the choice is sticky on web-c.
        assert_eq!(step(&slices, &mut sel, t0 + AVOID_FOR * 2), b("web-c"));
        assert_eq!(sel.next_expiry(), None);
        // Service deleted.
        let c = service_candidates("default", "web", None, &slices, &wanted);
        sel.update(&c, t0);
        assert!(matches!(sel.state(0), PortState::Waiting(w) if w.contains("does not exist")));
    }

    #[test]
    fn pod_reasons() {
        let mut pods: Mirror<Pod> = Mirror::default();
        let wanted = [RemotePort::Number(80)];
        let c = pod_candidates("pod default/x", &pods, &wanted);
        assert!(c[0].as_ref().unwrap_err().contains("no such pod"));
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "x"}, "spec": {"containers": [{"name": "c"}]},
            "status": {"phase": "Pending"}
        }))
        .unwrap();
        pods.apply(Change::Applied(p));
        let c = pod_candidates("pod default/x", &pods, &wanted);
        assert!(c[0].as_ref().unwrap_err().contains("x Pending"), "{c:?}");
    }
}
