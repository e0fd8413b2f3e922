//! `kubelan gateway --persist`: the same gateway as a systemd service, so forwarding, the
//! nft table and the DNS service come back at every boot. The unit is a journalled host
//! change (`kubelan_sys::journal::unit`), so `kubelan reset` removes it like any other.
//!
//! The unit runs the command line the user gave (minus `--persist`) with the binary's
//! absolute path, so what runs at boot is exactly what was tried in the foreground.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use kubelan_sys::journal::{self, HostGuard};

/// Where the unit goes.
pub const UNIT_DIR: &str = "/etc/systemd/system";
/// The unit's name.
pub const UNIT: &str = "kubelan-gateway.service";

/// Quotes one argument for a systemd `ExecStart=` line.
fn quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@+".contains(&b));
    if plain {
        arg.to_string()
    } else {
        let escaped = arg
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('%', "%%")
            .replace('$', "$$");
        format!("\"{escaped}\"")
    }
}

/// The unit file for `exe args…` (`--persist` removed), with the given environment.
pub fn unit_file(exe: &Path, args: &[String], env: &[(String, String)]) -> String {
    let mut cmd = vec![quote(&exe.to_string_lossy())];
    cmd.extend(
        args.iter()
            .filter(|a| a.as_str() != "--persist")
            .map(|a| quote(a)),
    );
    let mut out = String::from(
        "# Written by `kubelan gateway --persist`; `sudo kubelan reset` removes it.\n\
         [Unit]\n\
         Description=kubelan gateway: the Kubernetes cluster's networks for the LAN\n\
         Wants=network-online.target\n\
         After=network-online.target\n\n\
         [Service]\n",
    );
    for (k, v) in env {
        out.push_str(&format!("Environment={}\n", quote(&format!("{k}={v}"))));
    }
    out.push_str(&format!(
        "ExecStart={}\nRestart=on-failure\nRestartSec=5\n\n[Install]\nWantedBy=multi-user.target\n",
        cmd.join(" ")
    ));
    out
}

/// Writes the unit for this process's command line and starts it; returns the unit's name
/// and file.
pub(crate) async fn install(dir: &Path) -> anyhow::Result<(String, PathBuf)> {
    if which("systemctl").is_none() || !Path::new("/run/systemd/system").exists() {
        bail!(
            "--persist needs systemd, which does not run here; run `kubelan gateway` in the foreground or from your own service manager. Nothing was changed."
        );
    }
    let exe = std::env::current_exe().context("finding the kubelan binary")?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env: Vec<(String, String)> = ["KUBECONFIG", "KUBELAN_STATE_DIR", "KUBELAN_LOG"]
        .iter()
        .filter_map(|k| Some((k.to_string(), std::env::var(k).ok()?)))
        .map(|(k, v)| {
            // A relative KUBECONFIG would not resolve from the unit's working directory.
            if k == "KUBECONFIG" {
                let abs = std::env::split_paths(&v)
                    .map(|p| std::path::absolute(&p).unwrap_or(p))
                    .collect::<Vec<_>>();
                let joined = std::env::join_paths(abs)
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or(v);
                (k, joined)
            } else {
                (k, v)
            }
        })
        .collect();
    let path = dir.join(UNIT);
    let mut guard = HostGuard::begin(&journal::unit::persistent_dir(), "gateway --persist")?;
    // On failure the guard's drop takes back what was written.
    journal::unit::install(&mut guard, &path, &unit_file(&exe, &args, &env), None).await?;
    guard.keep();
    Ok((UNIT.to_string(), path))
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_runs_the_same_command_without_persist() {
        let unit = unit_file(
            Path::new("/usr/local/bin/kubelan"),
            &[
                "gateway".into(),
                "--mode".into(),
                "node".into(),
                "--lan".into(),
                "172.16.0.0/18".into(),
                "--persist".into(),
                "--context".into(),
                "my ctx$1%".into(),
            ],
            &[("KUBECONFIG".into(), "/root/.kube/config".into())],
        );
        assert!(unit.contains(
            "ExecStart=/usr/local/bin/kubelan gateway --mode node --lan 172.16.0.0/18 --context \"my ctx$$1%%\"\n"
        ), "{unit}");
        assert!(
            unit.contains("Environment=KUBECONFIG=/root/.kube/config\n"),
            "{unit}"
        );
        assert!(unit.contains("WantedBy=multi-user.target"));
        assert!(!unit.contains("--persist\n"));
    }
}
