//! Readiness and liveness probes (exec, tcpSocket, httpGet), run as the kubelet does.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use kubelan_apisim::meta;
use serde_json::Value;

use crate::netops::{self, ProbeResult};

use super::env::build_env;
use super::pod_run::PodRun;

pub(super) struct Probe {
    pub(super) spec: Value,
    pub(super) successes: u32,
    pub(super) failures: u32,
    pub(super) next: tokio::time::Instant,
}

impl Probe {
    pub(super) fn new(spec: Option<&Value>, started: tokio::time::Instant) -> Option<Self> {
        let spec = spec?.clone();
        let delay = spec
            .get("initialDelaySeconds")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        Some(Self {
            spec,
            successes: 0,
            failures: 0,
            next: started + Duration::from_secs(delay),
        })
    }

    pub(super) fn period(&self) -> Duration {
        Duration::from_secs(
            self.spec
                .get("periodSeconds")
                .and_then(Value::as_u64)
                .unwrap_or(10)
                .max(1),
        )
    }

    pub(super) fn threshold(&self, k: &str, def: u64) -> u32 {
        self.spec
            .get(k)
            .and_then(Value::as_u64)
            .unwrap_or(def)
            .max(1) as u32
    }
}

pub(super) async fn run_probe(run: &PodRun, c: &Value, p: &Value) -> ProbeResult {
    let timeout = Duration::from_secs(
        p.get("timeoutSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(1)
            .max(1),
    );
    let port_of = |v: Option<&Value>| -> Option<u16> {
        match v? {
            Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
            Value::String(s) => s.parse().ok().or_else(|| {
                c.get("ports")?
                    .as_array()?
                    .iter()
                    .find(|cp| meta::str_at(cp, &["name"]) == s)?
                    .get("containerPort")?
                    .as_u64()
                    .and_then(|n| u16::try_from(n).ok())
            }),
            _ => None,
        }
    };
    if let Some(h) = p.get("httpGet") {
        let Some(port) = port_of(h.get("port")) else {
            return ProbeResult::Failure("httpGet probe has no valid port".into());
        };
        let host: Ipv4Addr = meta::str_at(h, &["host"]).parse().unwrap_or(run.ip);
        let path = meta::str_at(h, &["path"]);
        let path = if path.is_empty() {
            "/".to_string()
        } else {
            path.to_string()
        };
        return netops::probe(
            &run.node_netns,
            SocketAddr::from((host, port)),
            Some(path),
            timeout,
        )
        .await;
    }
    if let Some(t) = p.get("tcpSocket") {
        let Some(port) = port_of(t.get("port")) else {
            return ProbeResult::Failure("tcpSocket probe has no valid port".into());
        };
        let host: Ipv4Addr = meta::str_at(t, &["host"]).parse().unwrap_or(run.ip);
        return netops::probe(
            &run.node_netns,
            SocketAddr::from((host, port)),
            None,
            timeout,
        )
        .await;
    }
    if let Some(e) = p.get("exec") {
        let cmd: Vec<String> = e
            .get("command")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        if cmd.is_empty() {
            return ProbeResult::Failure("exec probe has no command".into());
        }
        let env = build_env(run, c).unwrap_or_default();
        let mut command = tokio::process::Command::new(&cmd[0]);
        command
            .args(&cmd[1..])
            .env_clear()
            .envs(&env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if kubelan_sys::enter_on_spawn(
            &mut command,
            run.holder_ns.clone(),
            kubelan_sys::Cwd::Exactly(Path::new("/")),
            None,
        )
        .is_err()
        {
            return ProbeResult::Failure("cannot enter the pod".into());
        }
        return match tokio::time::timeout(timeout, async { command.spawn()?.wait().await }).await {
            Ok(Ok(s)) if s.success() => ProbeResult::Success,
            Ok(Ok(s)) => ProbeResult::Failure(format!("command {cmd:?} exited with {s}")),
            Ok(Err(e)) => ProbeResult::Failure(format!("command {cmd:?}: {e}")),
            Err(_) => ProbeResult::Failure(format!("command {cmd:?} timed out after {timeout:?}")),
        };
    }
    ProbeResult::Failure("probe has no handler (exec, httpGet or tcpSocket)".into())
}
