//! Fallback for systems other than Linux: every operation reports [`Error::Unsupported`].

/// Not supported here: leaves the limit as it is.
pub fn raise_fd_limit() -> u64 {
    0
}

/// Allocator tuning is glibc-specific (see the Linux version); nothing to do here.
pub fn tune_allocator() {}

/// Not supported here: the window is left to the system.
///
/// # Errors
/// Always `Unsupported`.
pub fn set_tcp_window_clamp<S>(_socket: &S, _bytes: u32) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// Not supported here.
///
/// # Errors
/// Always `Unsupported`.
pub fn tcp_window_clamp<S>(_socket: &S) -> std::io::Result<u32> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// Not supported here: only Linux redirects with nftables.
///
/// # Errors
/// Always `Unsupported`.
pub fn original_dst<S>(_socket: &S, _ipv6: bool) -> std::io::Result<std::net::SocketAddr> {
    Err(std::io::ErrorKind::Unsupported.into())
}
