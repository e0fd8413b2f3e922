//! A permission (a verb on a resource, in a scope) and a missing one, as the preflight
//! checks ask for them and the errors name them.

use std::fmt;

/// One permission: a verb on a resource, cluster-wide or in a namespace, optionally on one
/// named object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Access {
    /// The verb (`get`, `list`, `watch`, `create`, `patch`, `delete`, ...).
    pub verb: String,
    /// The API group (`""` for core).
    pub group: String,
    /// The resource (plural, e.g. `pods`).
    pub resource: String,
    /// The subresource, e.g. `portforward`.
    pub subresource: Option<String>,
    /// The object's name, when the permission is needed for one object only.
    pub name: Option<String>,
    /// The namespace; `None` means cluster-wide.
    pub namespace: Option<String>,
}

impl Access {
    /// `verb` on `resource` of `group`, cluster-wide.
    pub fn new(verb: &str, group: &str, resource: &str) -> Self {
        Self {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: None,
            name: None,
            namespace: None,
        }
    }

    /// The same, in `namespace`.
    pub fn in_namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// The same, on the subresource `sub`.
    pub fn subresource(mut self, sub: &str) -> Self {
        self.subresource = Some(sub.into());
        self
    }

    /// The same, for the object `name` only.
    pub fn named(mut self, name: &str) -> Self {
        self.name = Some(name.into());
        self
    }
}

impl Access {
    /// The verb and resource without the scope: `create jobs.batch`,
    /// `patch services/web`, `create pods/portforward`.
    pub fn verb_and_resource(&self) -> String {
        let full = self.to_string();
        match &self.namespace {
            Some(ns) => full
                .strip_suffix(&format!(" in {ns}"))
                .unwrap_or(&full)
                .to_string(),
            None => full,
        }
    }
}

impl fmt::Display for Access {
    /// `create clusterrolebindings.rbac.authorization.k8s.io (cluster-wide)`,
    /// `get secrets/kubelan-agent in kubelan-system`, `create pods/portforward in default`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.verb, self.resource)?;
        if !self.group.is_empty() {
            write!(f, ".{}", self.group)?;
        }
        if let Some(s) = &self.subresource {
            write!(f, "/{s}")?;
        }
        if let Some(n) = &self.name {
            if self.subresource.is_some() {
                write!(f, " of {n}")?;
            } else {
                write!(f, "/{n}")?;
            }
        }
        match &self.namespace {
            Some(ns) => write!(f, " in {ns}"),
            None => write!(f, " (cluster-wide)"),
        }
    }
}

/// A permission the user does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// The permission.
    pub access: Access,
    /// The authorizer's reason or evaluation error, when it gave one.
    pub reason: Option<String>,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "missing: {}", self.access)?;
        if let Some(r) = &self.reason {
            write!(f, " ({r})")?;
        }
        Ok(())
    }
}

/// The one sentence that says which permissions a way-back session (`kubelan <mode>`) lacks
/// in `namespace` and how to get them: `kubelan expose in namespace team-a needs create
/// jobs.batch and create services, which you lack; ...`.
pub fn session_sentence(mode: &str, namespace: &str, missing: &[Missing]) -> String {
    let list: Vec<String> = missing
        .iter()
        .map(|m| m.access.verb_and_resource())
        .collect();
    let list = match list.as_slice() {
        [] => "nothing".to_string(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    };
    format!(
        "kubelan {mode} in namespace {namespace} needs {list}, which you lack; `kubelan rbac {mode}` prints a ClusterRole granting them: ask an admin of {namespace} to bind it to you there with a RoleBinding"
    )
}
