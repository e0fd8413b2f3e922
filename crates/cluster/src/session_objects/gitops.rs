//! Whether a GitOps controller manages a Service, and so would put its selector back while
//! `kubelan replace` has swapped it.
//!
//! The signs are the ones the tools themselves write:
//! - Argo CD: the tracking annotation `argocd.argoproj.io/tracking-id`
//!   (`<app>:<group>/<kind>:<namespace>/<name>`; the default tracking method since Argo CD
//!   3.0), the tracking label `app.kubernetes.io/instance` (label tracking, the default
//!   before; Helm charts set the same label, so alone it is only a hint unless Helm's own
//!   release annotation is absent) or the common custom label `argocd.argoproj.io/instance`,
//!   Argo CD's field managers (`argocd-controller` for server-side apply,
//!   `argocd-application-controller` otherwise), and per-resource Argo CD annotations such
//!   as `argocd.argoproj.io/sync-options`.
//! - Flux: kustomize-controller's labels `kustomize.toolkit.fluxcd.io/name` and
//!   `/namespace` (it re-applies every interval, reverting drift, unless the object carries
//!   `kustomize.toolkit.fluxcd.io/reconcile: disabled` or
//!   `kustomize.toolkit.fluxcd.io/ssa: IfNotPresent` / `Ignore`), helm-controller's labels
//!   `helm.toolkit.fluxcd.io/name` and `/namespace` (it reverts at the next upgrade, or at
//!   once with drift detection on), and their field managers.
//!
//! Automated sync is configured on the Application or Kustomization, which a user who may
//! patch the Service often cannot read, so the result is a warning, never a refusal.

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Argo CD's tracking annotation.
pub const ARGOCD_TRACKING_ID: &str = "argocd.argoproj.io/tracking-id";
/// Argo CD's default tracking label (label tracking), also set by Helm charts.
pub const ARGOCD_INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
/// The custom tracking label Argo CD's documentation suggests.
pub const ARGOCD_CUSTOM_INSTANCE_LABEL: &str = "argocd.argoproj.io/instance";
/// Prefix of Argo CD's per-resource annotations.
pub const ARGOCD_PREFIX: &str = "argocd.argoproj.io/";
/// Flux kustomize-controller's label naming the Kustomization.
pub const FLUX_KUSTOMIZE_NAME: &str = "kustomize.toolkit.fluxcd.io/name";
/// Flux kustomize-controller's label naming the Kustomization's namespace.
pub const FLUX_KUSTOMIZE_NAMESPACE: &str = "kustomize.toolkit.fluxcd.io/namespace";
/// Flux kustomize-controller's per-object switch (`disabled`).
pub const FLUX_RECONCILE: &str = "kustomize.toolkit.fluxcd.io/reconcile";
/// Flux kustomize-controller's per-object apply policy.
pub const FLUX_SSA: &str = "kustomize.toolkit.fluxcd.io/ssa";
/// Flux helm-controller's label naming the HelmRelease.
pub const FLUX_HELM_NAME: &str = "helm.toolkit.fluxcd.io/name";
/// Flux helm-controller's label naming the HelmRelease's namespace.
pub const FLUX_HELM_NAMESPACE: &str = "helm.toolkit.fluxcd.io/namespace";
/// Helm's own release annotation (set by `helm install`, not by `helm template`).
pub const HELM_RELEASE_NAME: &str = "meta.helm.sh/release-name";

/// The GitOps tool that manages an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitOpsTool {
    /// Argo CD (an Application).
    ArgoCd,
    /// Flux's kustomize-controller (a Kustomization).
    FluxKustomization,
    /// Flux's helm-controller (a HelmRelease).
    FluxHelmRelease,
}

/// What [`gitops_manager`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitOpsFinding {
    /// The tool.
    pub tool: GitOpsTool,
    /// The sign, e.g. `annotation argocd.argoproj.io/tracking-id` or `field manager
    /// kustomize-controller`.
    pub evidence: String,
    /// The managing object when the sign names it: the Argo CD Application, or
    /// `namespace/name` of the Kustomization or HelmRelease.
    pub owner: Option<String>,
    /// False when the sign is shared with other tools (`app.kubernetes.io/instance`).
    pub certain: bool,
}

impl GitOpsFinding {
    /// One sentence warning that `replace` of `service` will be reverted, naming the sign and
    /// how to pause the tool for the session.
    pub fn warning(&self, service: &str) -> String {
        let owner = self.owner.as_deref();
        match (self.tool, self.certain) {
            (GitOpsTool::ArgoCd, true) => format!(
                "Service {service} is managed by Argo CD ({}{}): if automated sync with self-heal is on, Argo CD puts the selector back while replace runs; turn self-heal off for the session{}",
                self.evidence,
                owner
                    .map(|o| format!(", Application {o}"))
                    .unwrap_or_default(),
                owner
                    .map(|o| format!(" (`argocd app set {o} --self-heal=false`)"))
                    .unwrap_or_default(),
            ),
            (GitOpsTool::ArgoCd, false) => format!(
                "Service {service} has the label {}, which Argo CD uses to track what it manages: if an Argo CD Application with self-heal manages it, Argo CD puts the selector back while replace runs; turn self-heal off for the session",
                self.evidence.trim_start_matches("label "),
            ),
            (GitOpsTool::FluxKustomization, _) => format!(
                "Service {service} is applied by Flux ({}{}): Flux puts the selector back at its next reconciliation; suspend it for the session ({})",
                self.evidence,
                owner
                    .map(|o| format!(", Kustomization {o}"))
                    .unwrap_or_default(),
                flux_command("kustomization", owner),
            ),
            (GitOpsTool::FluxHelmRelease, _) => format!(
                "Service {service} is part of a Flux HelmRelease ({}{}): Flux puts the selector back at its next upgrade, or at once with drift detection on; suspend it for the session ({})",
                self.evidence,
                owner.map(|o| format!(", {o}")).unwrap_or_default(),
                flux_command("helmrelease", owner),
            ),
        }
    }
}

impl fmt::Display for GitOpsTool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ArgoCd => "Argo CD",
            Self::FluxKustomization => "Flux (kustomize-controller)",
            Self::FluxHelmRelease => "Flux (helm-controller)",
        })
    }
}

fn flux_command(kind: &str, owner: Option<&str>) -> String {
    match owner.and_then(|o| o.split_once('/')) {
        Some((ns, name)) => {
            format!("`flux suspend {kind} {name} -n {ns}`, and `flux resume` after")
        }
        None => format!("`flux suspend {kind} NAME -n NAMESPACE`, and `flux resume` after"),
    }
}

/// Which GitOps tool manages the object with `meta`, if any sign says so; the strongest
/// sign wins. Flux's kustomize-controller is not reported when the object opts out of its
/// reconciliation.
pub fn gitops_manager(meta: &ObjectMeta) -> Option<GitOpsFinding> {
    let label = |k: &str| {
        meta.labels
            .as_ref()
            .and_then(|l| l.get(k))
            .map(String::as_str)
    };
    let annotation = |k: &str| {
        meta.annotations
            .as_ref()
            .and_then(|a| a.get(k))
            .map(String::as_str)
    };
    let manager = |names: &[&str]| {
        meta.managed_fields.iter().flatten().find_map(|m| {
            let n = m.manager.as_deref()?;
            names.contains(&n).then(|| n.to_string())
        })
    };
    let found = |tool, evidence: String, owner: Option<String>, certain| {
        Some(GitOpsFinding {
            tool,
            evidence,
            owner: owner.filter(|o| !o.is_empty()),
            certain,
        })
    };
    let namespaced = |name: Option<&str>, ns: Option<&str>| {
        name.map(|n| match ns {
            Some(ns) => format!("{ns}/{n}"),
            None => n.to_string(),
        })
    };

    if let Some(id) = annotation(ARGOCD_TRACKING_ID) {
        let app = id.split(':').next().map(str::to_string);
        return found(
            GitOpsTool::ArgoCd,
            format!("annotation {ARGOCD_TRACKING_ID}"),
            app,
            true,
        );
    }
    if let Some(app) = label(ARGOCD_CUSTOM_INSTANCE_LABEL) {
        return found(
            GitOpsTool::ArgoCd,
            format!("label {ARGOCD_CUSTOM_INSTANCE_LABEL}"),
            Some(app.to_string()),
            true,
        );
    }
    if let Some(m) = manager(&["argocd-controller", "argocd-application-controller"]) {
        let app = label(ARGOCD_INSTANCE_LABEL).map(str::to_string);
        return found(GitOpsTool::ArgoCd, format!("field manager {m}"), app, true);
    }
    let flux_opted_out = annotation(FLUX_RECONCILE)
        .is_some_and(|v| v.eq_ignore_ascii_case("disabled"))
        || annotation(FLUX_SSA).is_some_and(|v| {
            v.eq_ignore_ascii_case("IfNotPresent") || v.eq_ignore_ascii_case("Ignore")
        });
    if !flux_opted_out {
        if let Some(name) = label(FLUX_KUSTOMIZE_NAME) {
            return found(
                GitOpsTool::FluxKustomization,
                format!("label {FLUX_KUSTOMIZE_NAME}"),
                namespaced(Some(name), label(FLUX_KUSTOMIZE_NAMESPACE)),
                true,
            );
        }
        if let Some(m) = manager(&["kustomize-controller"]) {
            return found(
                GitOpsTool::FluxKustomization,
                format!("field manager {m}"),
                None,
                true,
            );
        }
    }
    if let Some(name) = label(FLUX_HELM_NAME) {
        return found(
            GitOpsTool::FluxHelmRelease,
            format!("label {FLUX_HELM_NAME}"),
            namespaced(Some(name), label(FLUX_HELM_NAMESPACE)),
            true,
        );
    }
    if let Some(m) = manager(&["helm-controller"]) {
        return found(
            GitOpsTool::FluxHelmRelease,
            format!("field manager {m}"),
            None,
            true,
        );
    }
    if let Some(key) = meta
        .annotations
        .iter()
        .flatten()
        .map(|(k, _)| k)
        .find(|k| k.starts_with(ARGOCD_PREFIX))
    {
        return found(
            GitOpsTool::ArgoCd,
            format!("annotation {key}"),
            label(ARGOCD_INSTANCE_LABEL).map(str::to_string),
            true,
        );
    }
    // The instance label alone: Argo CD's label tracking, or just a Helm chart's label. A
    // release installed by Helm itself carries Helm's release annotation; Argo CD renders
    // charts with `helm template`, which does not add it.
    if let Some(instance) = label(ARGOCD_INSTANCE_LABEL)
        && annotation(HELM_RELEASE_NAME).is_none()
    {
        return found(
            GitOpsTool::ArgoCd,
            format!("label {ARGOCD_INSTANCE_LABEL}={instance}"),
            Some(instance.to_string()),
            false,
        );
    }
    None
}
