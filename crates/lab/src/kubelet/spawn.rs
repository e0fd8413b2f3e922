//! Starting and stopping a container's process: argv, identity, log files, signals.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use kubelan_apisim::meta;
use kubelan_sys::Ident;
use serde_json::Value;

use super::KUBELAN_IMAGE_UID;
use super::env::{StartError, build_env, expand};
use super::pod_run::PodRun;

// ------------------------------------------------------------------ containers

pub(super) fn is_kubelan_image(image: &str) -> bool {
    let repo = image.split('@').next().unwrap_or(image);
    let repo = repo
        .rsplit_once(':')
        .filter(|(_, t)| !t.contains('/'))
        .map_or(repo, |(r, _)| r);
    repo == "kubelan" || repo.ends_with("/kubelan")
}

pub(super) fn container_ident(
    pod: &Value,
    c: &Value,
    kubelan_image: bool,
) -> Result<Option<Ident>, StartError> {
    let get = |path: &[&str]| -> Option<&Value> {
        meta::at(c, &["securityContext"])
            .and_then(|sc| meta::at(sc, path))
            .or_else(|| {
                meta::at(pod, &["spec", "securityContext"]).and_then(|sc| meta::at(sc, path))
            })
    };
    let uid = get(&["runAsUser"])
        .and_then(Value::as_u64)
        .map(|u| u as u32);
    let gid = get(&["runAsGroup"])
        .and_then(Value::as_u64)
        .map(|g| g as u32);
    let non_root = get(&["runAsNonRoot"])
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let uid = match uid {
        Some(u) => Some(u),
        // kubelan's image declares USER 65532; other images run as root.
        None if kubelan_image && non_root => Some(KUBELAN_IMAGE_UID),
        None if kubelan_image => None,
        None => None,
    };
    if non_root && uid.unwrap_or(0) == 0 {
        return Err(StartError {
            reason: "CreateContainerConfigError",
            message: "container has runAsNonRoot and image will run as root".into(),
        });
    }
    Ok(uid.map(|u| Ident {
        uid: u,
        gid: gid.unwrap_or(u),
    }))
}

/// Resolves the argv of a container (command/args with the image's entrypoint).
fn argv(c: &Value, env: &BTreeMap<String, String>) -> Result<(Vec<String>, bool), StartError> {
    let image = meta::str_at(c, &["image"]);
    let kubelan = is_kubelan_image(image);
    let list = |k: &str| -> Vec<String> {
        c.get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|s| expand(s, env))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut command = list("command");
    let args = list("args");
    if command.is_empty() {
        if kubelan {
            command = vec!["kubelan".into()];
        } else {
            return Err(StartError {
                reason: "CreateContainerError",
                message: format!(
                    "the kubelan lab does not run image {image:?}: containers run programs from the machine's file system, so set `command` (only kubelan's own image has a known entrypoint)"
                ),
            });
        }
    }
    command.extend(args);
    Ok((command, kubelan))
}

pub(super) async fn spawn_container(
    run: &PodRun,
    c: &Value,
    log_path: &Path,
) -> Result<tokio::process::Child, StartError> {
    let env = build_env(run, c)?;
    let (argv, kubelan) = argv(c, &env)?;
    let ident = container_ident(&run.pod, c, kubelan)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .map_err(|e| StartError {
            reason: "RunContainerError",
            message: format!("cannot open log {}: {e}", log_path.display()),
        })?;
    let log2 = log.try_clone().map_err(|e| StartError {
        reason: "RunContainerError",
        message: e.to_string(),
    })?;
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(&env)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2))
        .process_group(0)
        .kill_on_drop(true);
    let cwd = meta::str_at(c, &["workingDir"]);
    let cwd = if cwd.is_empty() { "/" } else { cwd };
    kubelan_sys::enter_on_spawn(
        &mut cmd,
        run.holder_ns.clone(),
        kubelan_sys::Cwd::Exactly(Path::new(cwd)),
        ident,
    )
    .map_err(|e| StartError {
        reason: "RunContainerError",
        message: e.to_string(),
    })?;
    let child = cmd.spawn().map_err(|e| StartError {
        reason: "RunContainerError",
        message: format!("failed to start container process {:?}: {e}", argv[0]),
    })?;
    if let Some(pid) = child.id() {
        run.ctx.journal_process(
            pid,
            &format!(
                "container:{}/{}/{}",
                run.ns,
                run.name,
                meta::str_at(c, &["name"])
            ),
        );
    }
    Ok(child)
}

fn signal_group(child: &tokio::process::Child, sig: kubelan_sys::SignalKind) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), sig);
    }
}

pub(super) async fn stop_process(
    child: &mut tokio::process::Child,
    grace: i64,
) -> Option<std::process::ExitStatus> {
    signal_group(child, kubelan_sys::SignalKind::SIGTERM);
    let grace = Duration::from_secs(grace.clamp(0, 300) as u64);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(r) => {
            signal_group(child, kubelan_sys::SignalKind::SIGKILL);
            r.ok()
        }
        Err(_) => {
            signal_group(child, kubelan_sys::SignalKind::SIGKILL);
            child.wait().await.ok()
        }
    }
}

pub(super) fn exit_info(status: Option<std::process::ExitStatus>) -> (i32, Option<i32>) {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => (c, None),
            (None, Some(sig)) => (128 + sig, Some(sig)),
            _ => (1, None),
        },
        None => (1, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    #[test]
    fn images() {
        assert!(is_kubelan_image("kubelan"));
        assert!(is_kubelan_image("ghcr.io/kubelan/kubelan:0.1.0"));
        assert!(is_kubelan_image("localhost:5000/kubelan"));
        assert!(!is_kubelan_image("busybox"));
        assert!(!is_kubelan_image("ghcr.io/kubelan/kubelan-other:1"));
    }

    #[test]
    fn run_as_non_root() {
        let pod = json!({"spec": {"securityContext": {"runAsNonRoot": true}}});
        let c = json!({"name": "c"});
        assert_eq!(
            container_ident(&pod, &c, true).ok().flatten(),
            Some(Ident {
                uid: 65532,
                gid: 65532
            })
        );
        assert!(container_ident(&pod, &c, false).is_err());
        let c2 = json!({"securityContext": {"runAsUser": 1000, "runAsGroup": 2000}});
        assert_eq!(
            container_ident(&json!({}), &c2, false).ok().flatten(),
            Some(Ident {
                uid: 1000,
                gid: 2000
            })
        );
    }
}
