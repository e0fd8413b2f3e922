//! Fallback for systems other than Linux: every operation reports [`Error::Unsupported`].
