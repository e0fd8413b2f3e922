//! The store's locked state (objects by resource, the resourceVersion counter, the event
//! log) and the cluster facts admission reads: the part of the store that admission and the
//! authorizers look into, kept apart so they need not import the store itself.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use ipnet::Ipv4Net;
use serde_json::Value;

use crate::resources::ResourceInfo;

/// Facts about the simulated cluster that admission needs.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The Service CIDR (ClusterIP allocation range).
    pub service_cidr: Ipv4Net,
    /// NodePort range, inclusive.
    pub node_port_range: (u16, u16),
    /// DNS domain of the cluster.
    pub cluster_domain: String,
}

/// The kind of change a watch event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The object was created.
    Added,
    /// The object was changed.
    Modified,
    /// The object was removed.
    Deleted,
}

impl EventKind {
    /// The `type` of a watch event.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change in the store.
#[derive(Debug)]
pub struct Event {
    /// The resourceVersion of the change.
    pub rv: u64,
    /// The resource of the object.
    pub res: &'static ResourceInfo,
    /// What happened.
    pub kind: EventKind,
    /// The object after the change (for deletions: its last state, with the new version).
    pub object: Value,
    /// The object before the change, if it existed.
    pub old: Option<Value>,
}

/// Per-resource object maps, keyed by (namespace, name).
pub(crate) type Objects = HashMap<&'static str, BTreeMap<(String, String), Value>>;

pub(crate) struct Inner {
    pub(crate) rv: u64,
    pub(crate) objects: Objects,
    pub(crate) log: VecDeque<Arc<Event>>,
}

impl Inner {
    /// All stored objects of a resource.
    pub(crate) fn all(&self, res: &ResourceInfo) -> impl Iterator<Item = &Value> {
        self.objects
            .get(res.plural)
            .into_iter()
            .flat_map(|m| m.values())
    }

    /// All stored objects of a resource given by plural name.
    pub(crate) fn all_of(&self, plural: &str) -> impl Iterator<Item = &Value> {
        self.objects
            .get(plural)
            .into_iter()
            .flat_map(|m| m.values())
    }

    /// One stored object.
    pub(crate) fn get(&self, res: &ResourceInfo, ns: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(res.plural)?
            .get(&(ns.to_string(), name.to_string()))
    }
}
