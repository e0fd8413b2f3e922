//! What a long-running command asks of its surroundings: when the user wants it to stop
//! ([`shutdown_signal`]) and this host's name ([`hostname`], written on cluster objects).

/// Resolves on Ctrl-C, SIGTERM or SIGHUP: a closed terminal ends a session as cleanly as
/// Ctrl-C does. A signal that cannot be watched is left out (never resolves).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (term, hup) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    );
    let next = |s: Option<tokio::signal::unix::Signal>| async move {
        match s {
            Some(mut s) => {
                s.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = next(term.ok()) => {}
        () = next(hup.ok()) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// This host's name: `$HOSTNAME` (the pod name in a pod), else the kernel's, else
/// `unknown`.
pub fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}
