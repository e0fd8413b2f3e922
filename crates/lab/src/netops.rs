//! Network plumbing inside the lab's namespaces: `ip` batches, sysctls, and sockets opened
//! from inside a namespace (probes, port-forward dials).
//!
//! Every operation names its namespace explicitly; nothing here ever runs against the
//! machine's root network namespace.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::AsyncWriteExt;

/// Path of a named network namespace.
pub fn ns_path(name: &str) -> PathBuf {
    kubelan_sys::netns_path(name)
}

/// Runs `ip -n <netns> -batch -` with the given commands (one per line, without the
/// leading `ip`). The error names the namespace and carries `ip`'s message.
///
/// # Errors
/// When `ip` cannot run or a command fails.
pub async fn ip_batch(netns: &str, cmds: &[String]) -> anyhow::Result<()> {
    if cmds.is_empty() {
        return Ok(());
    }
    let mut child = tokio::process::Command::new("ip")
        .args(["-n", netns, "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run `ip` (install iproute2)")?;
    let mut stdin = child.stdin.take().context("ip stdin")?;
    stdin.write_all(cmds.join("\n").as_bytes()).await?;
    stdin.write_all(b"\n").await?;
    drop(stdin);
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        bail!(
            "ip in namespace {netns} failed: {}\ncommands:\n  {}",
            String::from_utf8_lossy(&out.stderr).trim(),
            cmds.join("\n  ")
        );
    }
    Ok(())
}

/// Runs a program and fails with its stderr when it does not succeed.
///
/// # Errors
/// When the program cannot run or exits non-zero.
pub async fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("cannot run `{program}`"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Creates a named network namespace.
///
/// # Errors
/// When it exists or `ip` fails.
pub async fn netns_add(name: &str) -> anyhow::Result<()> {
    run("ip", &["netns", "add", name]).await
}

/// Deletes a named network namespace (no error if it is already gone).
///
/// # Errors
/// When it exists and cannot be deleted.
pub async fn netns_del(name: &str) -> anyhow::Result<()> {
    if !ns_path(name).exists() {
        return Ok(());
    }
    run("ip", &["netns", "del", name]).await
}

/// Sets sysctls (`net/ipv4/ip_forward` style keys) inside a network namespace.
///
/// # Errors
/// When the namespace cannot be entered or a key cannot be written.
pub async fn sysctls(netns: &Path, settings: &[(&str, &str)]) -> anyhow::Result<()> {
    let owned: Vec<(String, String)> = settings
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let netns = netns.to_path_buf();
    let res = tokio::task::spawn_blocking(move || {
        kubelan_sys::in_netns(&netns, move || -> std::io::Result<()> {
            for (k, v) in &owned {
                let path = Path::new("/proc/sys").join(k);
                std::fs::write(&path, v).map_err(|e| {
                    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
                })?;
            }
            Ok(())
        })
    })
    .await?;
    res??;
    Ok(())
}

/// Opens a TCP connection from inside a network namespace.
///
/// # Errors
/// When the namespace cannot be entered or the connection fails.
pub async fn dial(
    netns: &Path,
    addr: SocketAddr,
    timeout: Duration,
) -> std::io::Result<tokio::net::TcpStream> {
    let netns = netns.to_path_buf();
    let std_stream = tokio::task::spawn_blocking(move || {
        kubelan_sys::in_netns(&netns, move || TcpStream::connect_timeout(&addr, timeout))
            .map_err(std::io::Error::other)?
    })
    .await
    .map_err(std::io::Error::other)??;
    std_stream.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(std_stream)
}

/// Binds a TCP listener inside a network namespace.
///
/// # Errors
/// When the namespace cannot be entered or the address is taken.
pub async fn listen(netns: &Path, addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let netns = netns.to_path_buf();
    let l = tokio::task::spawn_blocking(move || {
        kubelan_sys::in_netns(&netns, move || std::net::TcpListener::bind(addr))
            .map_err(std::io::Error::other)?
    })
    .await
    .map_err(std::io::Error::other)??;
    l.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(l)
}

/// Outcome of a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    /// The check passed.
    Success,
    /// The check failed, with why.
    Failure(String),
}

/// A TCP probe (connect) or HTTP GET probe from inside `netns`, as the kubelet runs them
/// from the node: HTTP status 200–399 is success.
pub async fn probe(
    netns: &Path,
    addr: SocketAddr,
    http_path: Option<String>,
    timeout: Duration,
) -> ProbeResult {
    let netns = netns.to_path_buf();
    let r = tokio::task::spawn_blocking(move || {
        kubelan_sys::in_netns(&netns, move || -> Result<(), String> {
            let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("dial tcp {addr}: {e}"))?;
            let Some(path) = http_path else {
                return Ok(());
            };
            s.set_read_timeout(Some(timeout)).ok();
            s.set_write_timeout(Some(timeout)).ok();
            let req = format!(
                "GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n\r\n"
            );
            s.write_all(req.as_bytes()).map_err(|e| format!("Get \"http://{addr}{path}\": {e}"))?;
            let mut buf = [0u8; 256];
            let mut got = Vec::new();
            while !got.contains(&b'\n') && got.len() < 256 {
                let n = s.read(&mut buf).map_err(|e| format!("Get \"http://{addr}{path}\": {e}"))?;
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            let line = String::from_utf8_lossy(&got);
            let code = line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse::<u16>().ok())
                .ok_or_else(|| format!("Get \"http://{addr}{path}\": malformed HTTP response"))?;
            if (200..400).contains(&code) {
                Ok(())
            } else {
                Err(format!("HTTP probe failed with statuscode: {code}"))
            }
        })
        .map_err(|e| e.to_string())?
    })
    .await;
    match r {
        Ok(Ok(())) => ProbeResult::Success,
        Ok(Err(e)) => ProbeResult::Failure(e),
        Err(e) => ProbeResult::Failure(e.to_string()),
    }
}
