//! Local connections: the accept loop, one task per connection that waits for a ready pod
//! and relays through the tunnel, and binding the listeners.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::ForwardError;
use crate::model::PortState;
use crate::report::Event;
use crate::resolve;
use crate::tunnel::{self, OpenError};

use super::{Ctx, Forward};

/// Decrements `open` when a connection task ends, however it ends.
struct OpenGuard<'a>(&'a AtomicU64);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Waits until the port has a pod, at most until `deadline`.
async fn wait_backend(
    state: &mut watch::Receiver<PortState>,
    deadline: tokio::time::Instant,
    cancel: &CancellationToken,
) -> Result<resolve::Backend, String> {
    loop {
        let why = match &*state.borrow_and_update() {
            PortState::Ready(b) => return Ok(b.clone()),
            PortState::Waiting(why) => why.clone(),
            PortState::Starting => "the pod list has not arrived yet".to_string(),
        };
        tokio::select! {
            r = state.changed() => if r.is_err() { return Err("the forward was removed".into()) },
            _ = tokio::time::sleep_until(deadline) => return Err(why),
            _ = cancel.cancelled() => return Err("shutting down".into()),
        }
    }
}

/// Serves one local connection.
async fn serve_connection(ctx: Arc<Ctx>, forward: Arc<Forward>, slot: usize, local: TcpStream) {
    let c = &forward.counters;
    c.total.fetch_add(1, Ordering::Relaxed);
    c.open.fetch_add(1, Ordering::Relaxed);
    ctx.registry.connections.fetch_add(1, Ordering::Relaxed);
    let _open = OpenGuard(&c.open);
    let Some(port) = forward.ports.get(slot) else {
        return;
    };
    let mut state = port.state.clone();
    let deadline = tokio::time::Instant::now() + ctx.opts.pod_wait;
    let fail = |pod: Option<String>, error: String| {
        c.failed.fetch_add(1, Ordering::Relaxed);
        ctx.events.emit(Event::ConnectionFailed {
            forward: forward.label.clone(),
            pod,
            error,
        });
    };
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let backend = match wait_backend(&mut state, deadline, &ctx.cancel).await {
            Ok(b) => b,
            Err(why) => {
                if !ctx.cancel.is_cancelled() {
                    fail(
                        None,
                        format!(
                            "no pod to forward to within {:?} ({why}); the connection was closed, the forward goes on",
                            ctx.opts.pod_wait
                        ),
                    );
                }
                return;
            }
        };
        let opened = tunnel::open(
            &ctx.client,
            &forward.namespace,
            &backend.pod,
            backend.port,
            1,
            ctx.opts.open_timeout,
        )
        .await;
        match opened {
            Ok(pf) => {
                ctx.registry.api_connections.fetch_add(1, Ordering::Relaxed);
                let end = tunnel::relay(local, pf, &c.bytes, &ctx.cancel).await;
                if let Some(e) = end.pod_error {
                    let _ = forward
                        .failed_tx
                        .try_send((forward.label.clone(), backend.pod.clone()));
                    let hint = if e.contains("refused") {
                        format!(
                            " (nothing listens on port {} in pod {}: is the container up and the port right?)",
                            backend.port, backend.pod
                        )
                    } else {
                        String::new()
                    };
                    fail(Some(backend.pod), format!("{e}{hint}"));
                } else if let Some(b) = end.broken
                    && end.down == 0
                {
                    fail(Some(backend.pod), b);
                }
                return;
            }
            Err(e) => {
                ctx.registry.api_failures.fetch_add(1, Ordering::Relaxed);
                let retry = match &e {
                    OpenError::Gone { .. } | OpenError::Timeout(_) => {
                        let _ = forward
                            .failed_tx
                            .try_send((forward.label.clone(), backend.pod.clone()));
                        true
                    }
                    OpenError::Forbidden { .. } => false,
                    OpenError::Other { .. } => true,
                };
                if !retry || attempt >= 3 || tokio::time::Instant::now() >= deadline {
                    fail(Some(backend.pod), e.to_string());
                    return;
                }
                tracing::debug!(error = %e, attempt, "port-forward failed; retrying");
                // Give the watcher a moment to pick another pod.
                let pause = Duration::from_millis(200 * u64::from(attempt));
                let _ = tokio::time::timeout(pause, state.changed()).await;
            }
        }
    }
}

/// Accepts connections until `stop` or the session ends.
pub(super) async fn accept_loop(
    ctx: Arc<Ctx>,
    forward: Arc<Forward>,
    slot: usize,
    listener: TcpListener,
) {
    loop {
        tokio::select! {
            _ = ctx.cancel.cancelled() => return,
            _ = forward.stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => {
                    let _ = s.set_nodelay(true);
                    tokio::spawn(serve_connection(ctx.clone(), forward.clone(), slot, s));
                }
                Err(e) => {
                    // Out of file descriptors and the like: say so, wait, go on.
                    ctx.events.emit(Event::Warning {
                        message: format!("{}: accepting a connection failed: {e}", forward.label),
                    });
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

/// Binds `addr`, turning OS errors into messages that name the fix.
pub(super) async fn bind(
    addr: SocketAddr,
    spec: &str,
    remote: &str,
) -> Result<TcpListener, ForwardError> {
    TcpListener::bind(addr).await.map_err(|source| {
        match source.kind() {
            std::io::ErrorKind::AddrInUse => ForwardError::PortInUse {
                addr,
                suggestion: format!(
                    "{spec} {}:{remote}",
                    if addr.port() <= 55535 { addr.port() + 10000 } else { addr.port() - 10000 }
                ),
                remote: remote.to_string(),
            },
            std::io::ErrorKind::PermissionDenied => ForwardError::Listen {
                addr,
                source,
                hint: format!(
                    " (ports below 1024 need root: use a higher local port, e.g. `{spec} {}:{remote}`, or run with sudo)",
                    u32::from(addr.port()) + 8000
                ),
            },
            std::io::ErrorKind::AddrNotAvailable => ForwardError::Listen {
                addr,
                source,
                hint: " (this machine has no such address: check --address)".into(),
            },
            _ => ForwardError::Listen {
                addr,
                source,
                hint: String::new(),
            },
        }
    })
}
