//! The control socket of a running `kubelan connect`: `kubelan status` reads its state,
//! `kubelan quit` stops it. One request line in (`status` or `quit`), one JSON line out.
//!
//! The socket lives in kubelan's state directory, so only whoever may change the
//! machine's network (root) can reach it. It is bound through the session's host guard:
//! the socket file goes with the session's other changes on exit, and after a crash the
//! crash watcher (or `kubelan reset`) removes it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kubelan_sys::journal::HostGuard;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

/// File name of the socket inside the state directory.
const SOCKET: &str = "connect.sock";

/// Where a running `connect` listens.
pub(crate) fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET)
}

/// Serves the control socket (in `guard`'s state directory, recorded in its journal) until
/// `stop` is cancelled; `quit` requests cancel `stop`. A stale socket file (no one
/// listening) is replaced; a live one is an error, since a second `connect` would fight the
/// first over routes and DNS. The guard removes the file when it restores.
pub(crate) async fn serve(
    guard: &mut HostGuard,
    status: Arc<dyn Fn() -> serde_json::Value + Send + Sync>,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let path = socket_path(guard.state_dir().path());
    if std::fs::symlink_metadata(&path).is_ok() {
        if UnixStream::connect(&path).await.is_ok() {
            anyhow::bail!(
                "another `kubelan connect` is running (control socket {}); stop it with `sudo kubelan quit`",
                path.display()
            );
        }
        let _ = std::fs::remove_file(&path);
    }
    let listener = kubelan_sys::socket::bind(guard, &path)?;
    let listener = listener
        .set_nonblocking(true)
        .and_then(|()| UnixListener::from_std(listener))
        .with_context(|| format!("cannot listen on {}", path.display()))?;
    Ok(tokio::spawn(async move {
        loop {
            let conn = tokio::select! {
                c = listener.accept() => c,
                () = stop.cancelled() => break,
            };
            let Ok((stream, _)) = conn else { continue };
            let (status, stop) = (status.clone(), stop.clone());
            tokio::spawn(async move {
                let (rd, mut wr) = stream.into_split();
                let mut line = String::new();
                let mut rd = BufReader::new(rd).take(256);
                let read = tokio::time::timeout(Duration::from_secs(5), rd.read_line(&mut line));
                if !matches!(read.await, Ok(Ok(_))) {
                    return;
                }
                let reply = match line.trim() {
                    "status" => status(),
                    "quit" => {
                        stop.cancel();
                        serde_json::json!({"ok": true, "message": "disconnecting"})
                    }
                    other => serde_json::json!({
                        "ok": false,
                        "message": format!("unknown request {other:?} (expected `status` or `quit`)"),
                    }),
                };
                let mut out = reply.to_string();
                out.push('\n');
                let _ = wr.write_all(out.as_bytes()).await;
            });
        }
    }))
}

/// Sends `request` to a running `connect`; `Ok(None)` when none is running.
pub(crate) async fn request(
    state_dir: &Path,
    request: &str,
) -> anyhow::Result<Option<serde_json::Value>> {
    let path = socket_path(state_dir);
    let stream = match UnixStream::connect(&path).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            anyhow::bail!(
                "cannot reach {}: permission denied (run with sudo)",
                path.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("cannot reach {}", path.display())),
    };
    let (rd, mut wr) = stream.into_split();
    wr.write_all(format!("{request}\n").as_bytes()).await?;
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(5),
        BufReader::new(rd).read_line(&mut line),
    )
    .await
    .context("the running `kubelan connect` did not answer within 5 s")??;
    Ok(Some(
        serde_json::from_str(&line).context("reading the answer")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn status_quit_and_a_second_instance() {
        let dir = std::env::temp_dir().join(format!("kl-control-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let state = kubelan_sys::journal::StateDir::new(&dir);
        let mut guard = HostGuard::begin(&state, "connect").unwrap();
        let stop = CancellationToken::new();
        let status: Arc<dyn Fn() -> serde_json::Value + Send + Sync> =
            Arc::new(|| serde_json::json!({"state": "connected"}));
        let task = serve(&mut guard, status.clone(), stop.clone())
            .await
            .unwrap();
        let err = serve(&mut guard, status, stop.clone()).await.unwrap_err();
        assert!(
            err.to_string().contains("another `kubelan connect`"),
            "{err}"
        );
        let st = request(&dir, "status").await.unwrap().unwrap();
        assert_eq!(st["state"], "connected");
        let bad = request(&dir, "dance").await.unwrap().unwrap();
        assert_eq!(bad["ok"], false);
        let q = request(&dir, "quit").await.unwrap().unwrap();
        assert_eq!(q["ok"], true);
        assert!(stop.is_cancelled());
        task.await.unwrap();
        assert!(request(&dir, "status").await.unwrap().is_none());
        // The socket file is the guard's to remove, with the session's other changes.
        let report = guard.restore().await;
        assert_eq!(
            report.to_string(),
            format!("removed socket {}", socket_path(&dir).display())
        );
        assert!(!socket_path(&dir).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
