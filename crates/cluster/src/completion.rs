//! Shell completion's questions to the cluster: the Services of a namespace and the
//! cluster's namespaces, asked on Tab the way kubectl's completion does, under a hard
//! deadline so that a slow or unreachable API server never hangs a shell.
//!
//! The cluster is the one the command line being completed names (`--kubeconfig`,
//! `--context`, `-n`, before or after the subcommand, as kubelan parses them), else
//! `KUBECONFIG`'s and its current context. Every failure (no kubeconfig, refused
//! connection, TLS, RBAC, deadline) is an empty answer: the caller falls back to what the
//! kubeconfig files alone say and prints nothing about it.
//!
//! The deadline is [`DEFAULT_TIMEOUT`], or `KUBELAN_COMPLETION_TIMEOUT_MS` milliseconds
//! ([`timeout_from`]); `0` turns the questions off.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{Api, ListParams};

use crate::kubeconfig::KubeArgs;

/// How long one Tab may wait for the cluster, in total (kubectl's completion waits up to
/// 5 s; a shell feels stuck well before that).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// The variable that sets the deadline in milliseconds (`0`: never ask the cluster).
pub const TIMEOUT_VAR: &str = "KUBELAN_COMPLETION_TIMEOUT_MS";

/// The cluster flags of a command line being completed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// `--kubeconfig`, else the `KUBECONFIG` the caller passed.
    pub kubeconfig: Option<PathBuf>,
    /// `--context`.
    pub context: Option<String>,
    /// The last `-n`/`--namespace`.
    pub namespace: Option<String>,
}

impl Scope {
    /// The flags among `args` (the words after the program's name, the one being completed
    /// included: a value still being typed is as good as none for the questions asked).
    /// Spellings: `--kubeconfig F`, `--kubeconfig=F`, `--context C`, `--context=C`,
    /// `-n N`, `-nN`, `-vn N`, `--namespace N`, `--namespace=N`; the last of each wins,
    /// empty values count as absent, and nothing after `--` (`run`'s program) is read.
    /// `kubeconfig_env` is `KUBECONFIG`, used when `--kubeconfig` is absent.
    pub fn from_args<S: AsRef<str>>(args: &[S], kubeconfig_env: Option<OsString>) -> Scope {
        let mut scope = Scope::default();
        let mut words = args.iter().map(AsRef::as_ref);
        let non_empty = |v: Option<&str>| v.filter(|v| !v.is_empty()).map(str::to_owned);
        while let Some(word) = words.next() {
            if word == "--" {
                break;
            }
            if let Some(long) = word.strip_prefix("--") {
                let (name, inline) = match long.split_once('=') {
                    Some((n, v)) => (n, Some(v)),
                    None => (long, None),
                };
                let slot = match name {
                    "kubeconfig" => None,
                    "context" => Some(&mut scope.context),
                    "namespace" => Some(&mut scope.namespace),
                    _ => continue,
                };
                let value = non_empty(inline.or_else(|| words.next()));
                match slot {
                    Some(slot) => *slot = value.or(slot.take()),
                    None => scope.kubeconfig = value.map(PathBuf::from).or(scope.kubeconfig),
                }
            } else if let Some(shorts) = word.strip_prefix('-') {
                // A cluster of short flags: only `-v` takes no value before `n`.
                let Some(at) = shorts.find('n') else {
                    continue;
                };
                if !shorts[..at].chars().all(|c| c == 'v') {
                    continue;
                }
                let rest = &shorts[at + 1..];
                let value = if rest.is_empty() {
                    words.next()
                } else {
                    Some(rest.strip_prefix('=').unwrap_or(rest))
                };
                scope.namespace = non_empty(value).or(scope.namespace.take());
            }
        }
        if scope.kubeconfig.is_none() {
            scope.kubeconfig = kubeconfig_env.filter(|k| !k.is_empty()).map(PathBuf::from);
        }
        scope
    }

    /// The cluster to ask, as the modes take it.
    pub fn kube_args(&self) -> KubeArgs {
        KubeArgs {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            namespace: self.namespace.clone(),
        }
    }
}

/// The deadline `value` (of [`TIMEOUT_VAR`]) sets: unset or not a number means
/// [`DEFAULT_TIMEOUT`], `0` means never ask the cluster (`None`).
pub fn timeout_from(value: Option<&str>) -> Option<Duration> {
    match value.map(|v| v.trim().parse::<u64>()) {
        Some(Ok(0)) => None,
        Some(Ok(ms)) => Some(Duration::from_millis(ms)),
        _ => Some(DEFAULT_TIMEOUT),
    }
}

/// The deadline the environment sets ([`timeout_from`] of [`TIMEOUT_VAR`]).
pub fn timeout() -> Option<Duration> {
    timeout_from(std::env::var(TIMEOUT_VAR).ok().as_deref())
}

/// Whether `current` may become a Service's form (worth asking the cluster for names):
/// `svc/…`, `service/…`, `services/…`, or a prefix of `svc/`.
pub fn may_name_a_service(current: &str) -> bool {
    match current.split_once('/') {
        Some((kind, _)) => matches!(
            kind.to_ascii_lowercase().as_str(),
            "svc" | "service" | "services"
        ),
        None => "svc/".starts_with(current),
    }
}

/// The Service forms `current` is a prefix of, for `names` (the namespace's Services):
/// `svc/NAME` (also while `s`, `sv` or nothing is typed), or `service/NAME` and
/// `services/NAME` when the user spelled the kind so. Sorted as `names` is.
pub fn service_candidates(current: &str, names: &[String]) -> Vec<String> {
    if !may_name_a_service(current) {
        return Vec::new();
    }
    let (kind, prefix) = current.split_once('/').unwrap_or(("svc", ""));
    names
        .iter()
        .filter(|n| n.starts_with(prefix))
        .map(|n| format!("{kind}/{n}"))
        .collect()
}

/// The words of the command line kubectl's plugin completion passes to
/// `kubectl_complete-lan` (`kubectl lan ARG… WORD<Tab>` runs it with `ARG… WORD`, WORD
/// maybe empty): a leading `__complete`, as cobra programs are called, is skipped, and no
/// word at all means an empty one being typed.
pub fn plugin_words(mut args: Vec<String>) -> Vec<String> {
    if args.first().is_some_and(|w| w == "__complete") {
        args.remove(0);
    }
    if args.is_empty() {
        args.push(String::new());
    }
    args
}

/// The answer kubectl reads from a plugin's completer (cobra's format): one candidate per
/// line, `value<TAB>help` with the help's first line, then the directive `:4` (no file
/// names from the shell: paths, where an argument takes one, are among the candidates).
pub fn plugin_answer(candidates: &[(String, Option<String>)]) -> String {
    let mut out = String::new();
    for (value, help) in candidates {
        // A line break would split a candidate in two.
        if value.contains('\n') {
            continue;
        }
        out.push_str(value);
        if let Some(first) = help.as_deref().and_then(|h| h.lines().next()) {
            out.push('\t');
            out.push_str(first);
        }
        out.push('\n');
    }
    out.push_str(":4\n");
    out
}

/// `a` and `b` together, sorted, each once.
pub fn merge(a: Vec<String>, b: Vec<String>) -> Vec<String> {
    let mut all = a;
    all.extend(b);
    all.sort();
    all.dedup();
    all
}

/// The names of the Services in the scope's namespace (`-n`, else the context's, else
/// `default`), or nothing when the cluster does not answer within `timeout`.
pub fn services(scope: &Scope, timeout: Duration) -> Vec<String> {
    let args = scope.kube_args();
    ask(timeout, async move {
        let cluster = crate::kubeconfig::connect(&args).await.ok()?;
        let api: Api<Service> = Api::namespaced(cluster.client, &cluster.namespace);
        let list = api.list(&ListParams::default()).await.ok()?;
        Some(
            list.items
                .into_iter()
                .filter_map(|s| s.metadata.name)
                .collect(),
        )
    })
}

/// The cluster's namespaces, or nothing when it does not answer within `timeout`.
pub fn namespaces(scope: &Scope, timeout: Duration) -> Vec<String> {
    let args = scope.kube_args();
    ask(timeout, async move {
        let cluster = crate::kubeconfig::connect(&args).await.ok()?;
        let api: Api<Namespace> = Api::all(cluster.client);
        let list = api.list(&ListParams::default()).await.ok()?;
        Some(
            list.items
                .into_iter()
                .filter_map(|n| n.metadata.name)
                .collect(),
        )
    })
}

/// `question`'s names, sorted, or nothing after `timeout`. It runs on a thread of its own
/// with its own runtime, so that the deadline holds even for work that blocks (a
/// kubeconfig's exec credential plugin): on time-out the thread is left to end by itself,
/// the completing process exits right after answering.
fn ask<F>(timeout: Duration, question: F) -> Vec<String>
where
    F: Future<Output = Option<Vec<String>>> + Send + 'static,
{
    let (names_tx, names_rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("completion".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            // The timer is made inside the runtime, which it needs.
            let names = rt.block_on(async move { tokio::time::timeout(timeout, question).await });
            let _ = names_tx.send(names.ok().flatten());
        });
    if spawned.is_err() {
        return Vec::new();
    }
    let mut names = names_rx
        .recv_timeout(timeout)
        .ok()
        .flatten()
        .unwrap_or_default();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(line: &str) -> Scope {
        let words: Vec<&str> = line.split(' ').collect();
        Scope::from_args(&words, Some("/env/config".into()))
    }

    #[test]
    fn the_cluster_flags_of_a_partial_command_line() {
        assert_eq!(
            scope("replace svc/w"),
            Scope {
                kubeconfig: Some("/env/config".into()),
                ..Scope::default()
            }
        );
        let want = Scope {
            kubeconfig: Some("/k".into()),
            context: Some("lab".into()),
            namespace: Some("team".into()),
        };
        for line in [
            "--kubeconfig /k --context lab -n team replace svc/",
            "replace --kubeconfig=/k svc/ --context=lab --namespace team",
            "-nteam --context lab forward --kubeconfig /k svc/",
            "-vn team forward --context lab --kubeconfig /k svc/",
            "-n=team --context lab status --kubeconfig /k -n",
            "-n other --namespace=team --context lab --kubeconfig /k",
        ] {
            assert_eq!(scope(line), want, "{line}");
        }
        // The value being typed counts as absent; an empty one too.
        assert_eq!(scope("status -n").namespace, None);
        assert_eq!(scope("status --context= --namespace=").context, None);
        assert_eq!(scope("status --context= --namespace=").namespace, None);
        assert_eq!(scope("-n a status -n").namespace, Some("a".into()));
        // Not ours: other short flags, `-o n`, and anything after `--`.
        assert_eq!(scope("forward -l n=x -o json").namespace, None);
        assert_eq!(scope("run -- kubectl -n x").namespace, None);
        assert_eq!(
            scope("--kubeconfig= status").kubeconfig,
            Some("/env/config".into())
        );
        let none: [&str; 0] = [];
        assert_eq!(Scope::from_args(&none, Some("".into())), Scope::default());
    }

    #[test]
    fn service_forms_the_user_is_typing() {
        let names: Vec<String> = ["db", "web", "web-admin"].map(String::from).into();
        assert_eq!(
            service_candidates("svc/w", &names),
            ["svc/web", "svc/web-admin"]
        );
        assert_eq!(
            service_candidates("", &names),
            ["svc/db", "svc/web", "svc/web-admin"]
        );
        assert_eq!(service_candidates("sv", &names).len(), 3);
        assert_eq!(service_candidates("service/d", &names), ["service/db"]);
        assert_eq!(service_candidates("Services/db", &names), ["Services/db"]);
        assert!(service_candidates("pod/w", &names).is_empty());
        assert!(service_candidates("w", &names).is_empty());
        assert!(service_candidates("svc/x", &names).is_empty());
        assert!(service_candidates("8080:80", &names).is_empty());
        for typed in ["", "s", "svc/", "svc/we", "service/x"] {
            assert!(may_name_a_service(typed), "{typed}");
        }
        for typed in ["8080:80", "pod/w", "web", "deploy/"] {
            assert!(!may_name_a_service(typed), "{typed}");
        }
    }

    #[test]
    fn the_deadline_and_its_switch() {
        assert_eq!(timeout_from(None), Some(DEFAULT_TIMEOUT));
        assert_eq!(timeout_from(Some("250")), Some(Duration::from_millis(250)));
        assert_eq!(timeout_from(Some("0")), None);
        assert_eq!(timeout_from(Some("soon")), Some(DEFAULT_TIMEOUT));
    }

    #[test]
    fn kubectls_plugin_protocol() {
        let words = |w: &[&str]| plugin_words(w.iter().map(|s| s.to_string()).collect());
        assert_eq!(words(&["con"]), ["con"]);
        assert_eq!(words(&["__complete", "status", ""]), ["status", ""]);
        assert_eq!(words(&[]), [""]);
        assert_eq!(words(&["__complete"]), [""]);
        let answer = plugin_answer(&[
            ("connect".into(), Some("L3 VPN\nmore".into())),
            ("svc/web".into(), None),
            ("bad\nvalue".into(), None),
        ]);
        assert_eq!(answer, "connect\tL3 VPN\nsvc/web\n:4\n");
        assert_eq!(plugin_answer(&[]), ":4\n");
    }

    #[test]
    fn kubeconfig_and_cluster_names_merge() {
        let a = vec!["team".to_string(), "default".to_string()];
        let b = vec!["default".to_string(), "cluster-only".to_string()];
        assert_eq!(merge(a, b), ["cluster-only", "default", "team"]);
    }

    #[test]
    fn a_question_that_does_not_end_is_cut_at_the_deadline() {
        let started = std::time::Instant::now();
        let names = ask(Duration::from_millis(100), std::future::pending());
        assert!(names.is_empty());
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        // Blocking work too (an exec credential plugin).
        let started = std::time::Instant::now();
        let names = ask(Duration::from_millis(100), async {
            std::thread::sleep(Duration::from_secs(3));
            Some(vec!["late".to_string()])
        });
        assert!(names.is_empty());
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        let names = ask(Duration::from_secs(5), async {
            Some(vec!["b".to_string(), "a".to_string()])
        });
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn an_unreachable_cluster_is_no_answer() {
        let dir = std::env::temp_dir().join(format!("kubelan-completion-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kc = dir.join("config");
        // Port 1 on loopback: nothing listens there.
        std::fs::write(
            &kc,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: a\n  cluster:\n    server: https://127.0.0.1:1\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: c\n  context:\n    cluster: a\n    user: u\ncurrent-context: c\n",
        )
        .unwrap();
        let scope = Scope::from_args(&["status"], Some(kc.clone().into()));
        assert!(namespaces(&scope, Duration::from_secs(2)).is_empty());
        assert!(services(&scope, Duration::from_secs(2)).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
