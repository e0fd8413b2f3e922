//! Fallback for systems other than Linux: every operation reports [`Error::Unsupported`].

/// Not supported here: leaves the limit as it is.
pub fn raise_fd_limit() -> u64 {
    0
}
