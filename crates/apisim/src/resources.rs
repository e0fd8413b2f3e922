//! The resource kinds the simulator serves, with the facts discovery and routing need.

/// Verbs of an ordinary, fully served resource.
const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// One served resource (a `plural` in an API group/version).
#[derive(Debug, PartialEq, Eq)]
pub struct ResourceInfo {
    /// API group, empty for the core group.
    pub group: &'static str,
    /// API version.
    pub version: &'static str,
    /// Object kind.
    pub kind: &'static str,
    /// URL name (plural).
    pub plural: &'static str,
    /// Singular name.
    pub singular: &'static str,
    /// Namespaced (true) or cluster-scoped.
    pub namespaced: bool,
    /// `kubectl` short names.
    pub short_names: &'static [&'static str],
    /// Categories (`all`).
    pub categories: &'static [&'static str],
    /// Verbs on the main resource.
    pub verbs: &'static [&'static str],
    /// Subresources served (`status`, `scale`, `portforward`, `log`).
    pub subresources: &'static [&'static str],
}

impl ResourceInfo {
    /// `apiVersion` of objects of this resource (`v1`, `apps/v1`).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural.group` (or just `plural` in the core group), as RBAC and messages name it.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Whether the resource has a `status` subresource (spec and status written apart).
    pub fn has_status(&self) -> bool {
        self.subresources.contains(&"status")
    }

    /// Whether objects may be stored (false for review kinds that are create-only).
    pub fn is_stored(&self) -> bool {
        self.verbs.contains(&"get")
    }

    /// The first Kubernetes minor version that serves this resource at this group/version
    /// by default (0: every supported version). `networking.k8s.io/v1` ServiceCIDRs are GA
    /// in 1.33; older API servers answer 404, which clients use to tell their age.
    pub fn since_minor(&self) -> u32 {
        match (self.group, self.version, self.plural) {
            ("networking.k8s.io", "v1", "servicecidrs") => 33,
            _ => 0,
        }
    }

    /// Whether an API server of Kubernetes `1.<minor>` serves this resource.
    pub fn served_in(&self, minor: u32) -> bool {
        minor >= self.since_minor()
    }
}

macro_rules! res {
    ($group:expr, $version:expr, $kind:expr, $plural:expr, $singular:expr, $ns:expr,
     short: [$($short:expr),*], cat: [$($cat:expr),*], sub: [$($sub:expr),*]) => {
        ResourceInfo {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            namespaced: $ns,
            short_names: &[$($short),*],
            categories: &[$($cat),*],
            verbs: ALL_VERBS,
            subresources: &[$($sub),*],
        }
    };
}

/// Every resource the simulator serves.
pub static RESOURCES: &[ResourceInfo] = &[
    res!("", "v1", "Namespace", "namespaces", "namespace", false, short: ["ns"], cat: [], sub: ["status", "finalize"]),
    res!("", "v1", "Node", "nodes", "node", false, short: ["no"], cat: [], sub: ["status"]),
    res!("", "v1", "Pod", "pods", "pod", true, short: ["po"], cat: ["all"], sub: ["status", "portforward", "log", "exec", "binding", "eviction"]),
    res!("", "v1", "Service", "services", "service", true, short: ["svc"], cat: ["all"], sub: ["status"]),
    res!("", "v1", "Endpoints", "endpoints", "endpoints", true, short: ["ep"], cat: [], sub: []),
    res!("", "v1", "ConfigMap", "configmaps", "configmap", true, short: ["cm"], cat: [], sub: []),
    res!("", "v1", "Secret", "secrets", "secret", true, short: [], cat: [], sub: []),
    res!("", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", true, short: ["sa"], cat: [], sub: ["token"]),
    res!("", "v1", "Event", "events", "event", true, short: ["ev"], cat: [], sub: []),
    res!("apps", "v1", "Deployment", "deployments", "deployment", true, short: ["deploy"], cat: ["all"], sub: ["status", "scale"]),
    res!("apps", "v1", "ReplicaSet", "replicasets", "replicaset", true, short: ["rs"], cat: ["all"], sub: ["status", "scale"]),
    res!("apps", "v1", "StatefulSet", "statefulsets", "statefulset", true, short: ["sts"], cat: ["all"], sub: ["status", "scale"]),
    res!("batch", "v1", "Job", "jobs", "job", true, short: [], cat: ["all"], sub: ["status"]),
    res!("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", "endpointslice", true, short: [], cat: [], sub: []),
    res!("networking.k8s.io", "v1", "ServiceCIDR", "servicecidrs", "servicecidr", false, short: [], cat: [], sub: ["status"]),
    res!("coordination.k8s.io", "v1", "Lease", "leases", "lease", true, short: [], cat: [], sub: []),
    res!("rbac.authorization.k8s.io", "v1", "Role", "roles", "role", true, short: [], cat: [], sub: []),
    res!("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", "clusterrole", false, short: [], cat: [], sub: []),
    res!("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", "rolebinding", true, short: [], cat: [], sub: []),
    res!("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", "clusterrolebinding", false, short: [], cat: [], sub: []),
    ResourceInfo {
        group: "authorization.k8s.io",
        version: "v1",
        kind: "SelfSubjectAccessReview",
        plural: "selfsubjectaccessreviews",
        singular: "selfsubjectaccessreview",
        namespaced: false,
        short_names: &[],
        categories: &[],
        verbs: &["create"],
        subresources: &[],
    },
    ResourceInfo {
        group: "authorization.k8s.io",
        version: "v1",
        kind: "SelfSubjectRulesReview",
        plural: "selfsubjectrulesreviews",
        singular: "selfsubjectrulesreview",
        namespaced: false,
        short_names: &[],
        categories: &[],
        verbs: &["create"],
        subresources: &[],
    },
    ResourceInfo {
        group: "authentication.k8s.io",
        version: "v1",
        kind: "SelfSubjectReview",
        plural: "selfsubjectreviews",
        singular: "selfsubjectreview",
        namespaced: false,
        short_names: &[],
        categories: &[],
        verbs: &["create"],
        subresources: &[],
    },
];

/// The resource served at `group/version/plural`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource for an object's `apiVersion` and `kind`.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.kind == kind && r.api_version() == api_version)
}

/// Distinct API groups other than core, in a stable order, with their versions.
pub fn groups() -> Vec<(&'static str, &'static str)> {
    groups_in(u32::MAX)
}

/// Distinct API groups other than core that Kubernetes `1.<minor>` serves (with at least
/// one resource), in a stable order, with their versions.
pub fn groups_in(minor: u32) -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES.iter().filter(|r| r.served_in(minor)) {
        if !r.group.is_empty() && !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        let d = find("apps", "v1", "deployments").unwrap();
        assert_eq!(d.kind, "Deployment");
        assert_eq!(d.api_version(), "apps/v1");
        assert_eq!(by_kind("v1", "Pod").unwrap().plural, "pods");
        assert!(by_kind("apps/v1", "Pod").is_none());
        assert_eq!(
            find("discovery.k8s.io", "v1", "endpointslices")
                .unwrap()
                .group_resource(),
            "endpointslices.discovery.k8s.io"
        );
        assert!(groups().contains(&("rbac.authorization.k8s.io", "v1")));
    }

    #[test]
    fn service_cidrs_are_served_from_1_33() {
        let sc = find("networking.k8s.io", "v1", "servicecidrs").unwrap();
        assert!(sc.served_in(33) && !sc.served_in(32));
        assert!(find("", "v1", "pods").unwrap().served_in(30));
        assert!(groups_in(33).contains(&("networking.k8s.io", "v1")));
        // The simulator serves nothing else in that group.
        assert!(!groups_in(32).contains(&("networking.k8s.io", "v1")));
    }

    #[test]
    fn kinds_and_plurals_are_unique() {
        for (i, a) in RESOURCES.iter().enumerate() {
            for b in &RESOURCES[i + 1..] {
                assert_ne!(a.kind, b.kind);
                assert!(a.plural != b.plural || a.group != b.group);
            }
        }
    }
}
