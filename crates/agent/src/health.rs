//! The health endpoint: `GET /healthz` (process alive) and `GET /readyz` (listeners up,
//! watch cache synced, not draining), plus `GET /stats` with counters as JSON.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::Agent;

pub(crate) async fn serve(listener: TcpListener, agent: Arc<Agent>) {
    loop {
        let Ok((mut tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let agent = agent.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let mut n = 0;
            // Probes send tiny requests; read until the end of the headers or 1 KiB.
            while n < buf.len() {
                match tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut buf[n..])).await {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                    Ok(Ok(k)) => n += k,
                }
                if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let line = std::str::from_utf8(&buf[..n]).unwrap_or("");
            let path = line.split_whitespace().nth(1).unwrap_or("");
            let s = &agent.stats;
            let (status, body) = match path {
                "/healthz" => ("200 OK", "ok\n".to_string()),
                "/readyz" if agent.ready.load(Ordering::Relaxed) => ("200 OK", "ready\n".into()),
                "/readyz" if agent.shutdown.is_cancelled() => {
                    ("503 Service Unavailable", "shutting down\n".into())
                }
                "/readyz" => (
                    "503 Service Unavailable",
                    "waiting for the cluster watch cache\n".into(),
                ),
                "/stats" => (
                    "200 OK",
                    format!(
                        "{{\"carriers\":{},\"active_flows\":{},\"refused\":{},\"policy_refused\":{},\"bytes_up\":{},\"bytes_down\":{}}}\n",
                        s.carriers.load(Ordering::Relaxed),
                        s.active_flows.load(Ordering::Relaxed),
                        s.refused.load(Ordering::Relaxed),
                        s.policy_refused.load(Ordering::Relaxed),
                        s.bytes_up.load(Ordering::Relaxed),
                        s.bytes_down.load(Ordering::Relaxed),
                    ),
                ),
                _ => ("404 Not Found", "try /healthz, /readyz or /stats\n".into()),
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tcp.write_all(resp.as_bytes()).await;
            let _ = tcp.shutdown().await;
        });
    }
}
