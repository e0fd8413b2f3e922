//! Connecting to a cluster the way kubectl does: `--kubeconfig` or `KUBECONFIG` (a
//! colon-separated list, merged), else `~/.kube/config`, else the in-cluster service account;
//! `--context` or the current context; `-n` or the context's namespace or `default`.

use std::path::{Path, PathBuf};

use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};

use crate::error::{ApiTarget, ClusterError};

/// Which cluster to talk to, and the namespace to work in (the binary's global
/// `--kubeconfig`, `--context` and `-n`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeArgs {
    /// Kubeconfig file (a colon-separated list is merged, as kubectl does) [default: ~/.kube/config].
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use [default: the current context].
    pub context: Option<String>,
    /// Namespace [default: the context's namespace, else `default`].
    pub namespace: Option<String>,
}

/// Which cluster to talk to, for commands whose namespace means something else
/// (`install`: the agent's) or several namespaces (`forward`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeconfigArgs {
    /// Kubeconfig file (a colon-separated list is merged, as kubectl does) [default: ~/.kube/config].
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use [default: the current context].
    pub context: Option<String>,
}

impl KubeconfigArgs {
    /// These arguments with an explicit namespace.
    pub fn with_namespace(&self, namespace: &str) -> KubeArgs {
        KubeArgs {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            namespace: Some(namespace.to_string()),
        }
    }
}

/// A connected client and where it points.
#[derive(Clone)]
pub struct ClusterClient {
    /// The API client.
    pub client: kube::Client,
    /// The namespace to work in: `-n`, else the context's namespace, else `default`.
    pub namespace: String,
    /// The kubeconfig context (`in-cluster` when using the pod's service account).
    pub context: String,
    /// The API server URL.
    pub server: String,
    /// The kubeconfig user entry of the context (`service account` in a pod).
    pub user: String,
}

impl ClusterClient {
    /// Where this client's requests go, and as whom, for messages.
    pub fn target(&self) -> ApiTarget {
        ApiTarget {
            context: self.context.clone(),
            server: self.server.clone(),
            user: self.user.clone(),
        }
    }

    /// `e` (from a request made with this client) as the error that names its fix: see
    /// [`ClusterError::explain`]. `rbac_hint` names the `kubelan rbac MODE` of the caller.
    #[must_use]
    pub fn explain(&self, e: ClusterError, rbac_hint: &str) -> ClusterError {
        e.explain(&self.target(), rbac_hint)
    }
}

impl std::fmt::Debug for ClusterClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterClient")
            .field("namespace", &self.namespace)
            .field("context", &self.context)
            .field("server", &self.server)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Builds a client from the kubeconfig (or the in-cluster service account) as kubectl would.
///
/// # Errors
/// [`ClusterError::NoKubeconfig`] (names `KUBECONFIG` and `--kubeconfig`),
/// [`ClusterError::ReadKubeconfig`], [`ClusterError::UnknownContext`] (lists the contexts
/// there are), [`ClusterError::NoCurrentContext`], [`ClusterError::Context`],
/// [`ClusterError::InCluster`] or [`ClusterError::Client`].
pub async fn connect(args: &KubeArgs) -> Result<ClusterClient, ClusterError> {
    let Some(kubeconfig) = load_kubeconfig(args.kubeconfig.as_deref())? else {
        let config = kube::Config::incluster().map_err(ClusterError::InCluster)?;
        return finish(config, args, "in-cluster".into(), "service account".into());
    };
    let context = select_context(&kubeconfig, args.context.as_deref())?;
    let user = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.as_ref())
        .and_then(|c| c.user.clone())
        .unwrap_or_default();
    let options = KubeConfigOptions {
        context: Some(context.clone()),
        ..KubeConfigOptions::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|source| ClusterError::Context {
            context: context.clone(),
            source,
        })?;
    finish(config, args, context, user)
}

fn finish(
    config: kube::Config,
    args: &KubeArgs,
    context: String,
    user: String,
) -> Result<ClusterClient, ClusterError> {
    let namespace = args
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| config.default_namespace.clone());
    let server = config.cluster_url.to_string();
    let client = crate::transport::client(config).map_err(ClusterError::Client)?;
    Ok(ClusterClient {
        client,
        namespace,
        context,
        server,
        user,
    })
}

/// The context names of the kubeconfig `explicit` (the caller passes `KUBECONFIG`'s value;
/// else `~/.kube/config`), or with `namespaces` the namespaces they name; sorted, each once.
/// Read from the files only, never the network, for shell completion. Empty when there is
/// no readable file.
pub fn context_names(explicit: Option<&Path>, namespaces: bool) -> Vec<String> {
    let Ok(Some(kc)) = load_kubeconfig(explicit) else {
        return Vec::new();
    };
    let mut names: Vec<String> = kc
        .contexts
        .into_iter()
        .filter_map(|c| match namespaces {
            true => c.context.and_then(|c| c.namespace),
            false => Some(c.name),
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Reads and merges the kubeconfig files; `None` means "none, but this is a pod: use the
/// in-cluster configuration".
fn load_kubeconfig(explicit: Option<&Path>) -> Result<Option<Kubeconfig>, ClusterError> {
    let paths: Vec<PathBuf> = match explicit {
        Some(p) => std::env::split_paths(p.as_os_str())
            .filter(|p| !p.as_os_str().is_empty())
            .collect(),
        None => Vec::new(),
    };
    let paths = if paths.is_empty() {
        let default = std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".kube").join("config"))
            .into_iter()
            .collect::<Vec<_>>();
        if !default.iter().any(|p| p.exists())
            && std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        {
            return Ok(None);
        }
        default
    } else {
        paths
    };
    // Like kubectl: in a list, files that do not exist are skipped; at least one must.
    let existing: Vec<&PathBuf> = paths.iter().filter(|p| p.exists()).collect();
    if existing.is_empty() {
        return Err(ClusterError::NoKubeconfig { searched: paths });
    }
    let mut merged: Option<Kubeconfig> = None;
    for path in existing {
        let kc = Kubeconfig::read_from(path).map_err(|source| ClusterError::ReadKubeconfig {
            path: path.clone(),
            source,
        })?;
        merged = Some(match merged {
            None => kc,
            Some(m) => {
                m.merge(kc)
                    .map_err(|source: KubeconfigError| ClusterError::ReadKubeconfig {
                        path: path.clone(),
                        source,
                    })?
            }
        });
    }
    Ok(merged)
}

fn select_context(kc: &Kubeconfig, wanted: Option<&str>) -> Result<String, ClusterError> {
    let available: Vec<String> = kc.contexts.iter().map(|c| c.name.clone()).collect();
    let name = match wanted.filter(|w| !w.is_empty()) {
        Some(w) => w.to_string(),
        None => match kc.current_context.as_deref().filter(|c| !c.is_empty()) {
            Some(c) => c.to_string(),
            None => return Err(ClusterError::NoCurrentContext { available }),
        },
    };
    if available.contains(&name) {
        Ok(name)
    } else {
        Err(ClusterError::UnknownContext {
            context: name,
            available,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KC: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: a\n  cluster:\n    server: https://10.0.0.1:6443\n- name: b\n  cluster:\n    server: https://10.0.0.2:6443\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: one\n  context:\n    cluster: a\n    user: u\n    namespace: team\n- name: two\n  context:\n    cluster: b\n    user: u\ncurrent-context: one\n";

    /// A kubeconfig file that is removed when dropped.
    struct TempFile(PathBuf);

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    impl std::ops::Deref for TempFile {
        type Target = PathBuf;
        fn deref(&self) -> &PathBuf {
            &self.0
        }
    }

    fn write(name: &str, text: &str) -> TempFile {
        let p = std::env::temp_dir().join(format!("kubelan-cluster-{}-{name}", std::process::id()));
        std::fs::write(&p, text).unwrap();
        TempFile(p)
    }

    #[test]
    fn contexts_come_from_the_files_with_their_namespaces() {
        let kc = write("contexts", KC);
        assert_eq!(context_names(Some(&kc), false), ["one", "two"]);
        assert_eq!(context_names(Some(&kc), true), ["team"]);
        let none = Path::new("/nonexistent/kubeconfig");
        assert!(context_names(Some(none), false).is_empty());
    }

    fn args(path: &Path, context: Option<&str>, ns: Option<&str>) -> KubeArgs {
        KubeArgs {
            kubeconfig: Some(path.to_path_buf()),
            context: context.map(String::from),
            namespace: ns.map(String::from),
        }
    }

    #[tokio::test]
    async fn namespace_and_context_precedence() {
        let p = write("kc1", KC);
        let c = connect(&args(&p, None, None)).await.unwrap();
        assert_eq!((c.context.as_str(), c.namespace.as_str()), ("one", "team"));
        assert_eq!(c.server, "https://10.0.0.1:6443/");
        assert_eq!(c.user, "u");
        let c = connect(&args(&p, Some("two"), None)).await.unwrap();
        assert_eq!(
            (c.context.as_str(), c.namespace.as_str()),
            ("two", "default")
        );
        let c = connect(&args(&p, None, Some("x"))).await.unwrap();
        assert_eq!(c.namespace, "x");
    }

    #[tokio::test]
    async fn errors_name_the_fix() {
        let p = write("kc2", KC);
        let e = connect(&args(&p, Some("three"), None)).await.unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("\"three\"") && msg.contains("one, two"),
            "{msg}"
        );

        let missing = p.with_file_name("does-not-exist");
        let e = connect(&args(&missing, None, None)).await.unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("KUBECONFIG") && msg.contains("--kubeconfig"),
            "{msg}"
        );

        let no_current = write("kc3", &KC.replace("current-context: one\n", ""));
        let e = connect(&args(&no_current, None, None)).await.unwrap_err();
        assert!(e.to_string().contains("--context"), "{e}");
    }

    #[tokio::test]
    async fn colon_separated_list_merges_and_skips_missing() {
        let a = write("kc4", KC);
        let b = write(
            "kc5",
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://10.0.0.3:6443\nusers:\n- name: v\n  user:\n    token: t\ncontexts:\n- name: three\n  context:\n    cluster: c\n    user: v\ncurrent-context: three\n",
        );
        let list = std::env::join_paths([a.with_file_name("nope"), a.clone(), b.clone()]).unwrap();
        let c = connect(&args(Path::new(&list), Some("three"), None))
            .await
            .unwrap();
        assert_eq!(c.server, "https://10.0.0.3:6443/");
        // The first file to set current-context wins.
        let c = connect(&args(Path::new(&list), None, None)).await.unwrap();
        assert_eq!(c.context, "one");
    }
}
