//! Kernel parameters under `/proc/sys`, changed through the host guard.
//!
//! Network parameters (`net.*`) belong to the network namespace of the process that opens
//! the file, so a gateway started inside a lab host changes that host only.
//!
//! [`set`] records the previous value in the journal before writing the new one; undo writes
//! the previous value back, unless someone else changed the parameter since (then the report
//! says so and the value is left alone).

use std::path::PathBuf;

use crate::error::ApplyError;
pub use crate::error::SysctlError;
use crate::journal::record::{Change, HostGuard, Outcome};

/// The `/proc/sys` file of a dotted key (`net.ipv4.ip_forward`).
///
/// # Errors
/// [`SysctlError::BadKey`] for empty keys or keys with path tricks (`..`, `/`).
pub fn path_of(key: &str) -> Result<PathBuf, SysctlError> {
    let ok = !key.is_empty()
        && key.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
    if !ok {
        return Err(SysctlError::BadKey(key.to_string()));
    }
    Ok(PathBuf::from("/proc/sys").join(key.replace('.', "/")))
}

/// The current value of `key`, trimmed.
///
/// # Errors
/// [`SysctlError`] when the key is malformed or the file cannot be read.
pub fn get(key: &str) -> Result<String, SysctlError> {
    let path = path_of(key)?;
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .map_err(|source| SysctlError::Io { path, source })
}

fn write(key: &str, value: &str) -> Result<(), SysctlError> {
    let path = path_of(key)?;
    std::fs::write(&path, format!("{value}\n")).map_err(|source| SysctlError::Io { path, source })
}

/// Sets `key` to `value` through `guard`. Nothing is recorded or written when the parameter
/// already has that value. Returns whether it changed.
///
/// # Errors
/// [`ApplyError::Sysctl`] when the parameter cannot be read or written (the journal entry
/// is withdrawn), [`ApplyError::Journal`] when the journal cannot be written.
pub fn set(guard: &mut HostGuard, key: &str, value: &str) -> Result<bool, ApplyError> {
    let previous = get(key)?;
    if previous == value {
        return Ok(false);
    }
    let change = Change::Sysctl {
        key: key.to_string(),
        previous,
        value: value.to_string(),
    };
    guard.record(change.clone())?;
    if let Err(e) = write(key, value) {
        guard.unrecord(&change);
        return Err(e.into());
    }
    Ok(true)
}

/// Undoes a [`Change::Sysctl`].
pub(crate) fn undo(key: &str, previous: &str, value: &str, change: &Change) -> Outcome {
    match get(key) {
        Ok(now) if now == previous => Outcome::AlreadyGone(format!("{key} is already {previous}")),
        Ok(now) if now != value => Outcome::Kept(format!(
            "left {key} = {now}: it was changed by someone else after kubelan set it to {value} (it was {previous} before)"
        )),
        Ok(_) => match write(key, previous) {
            Ok(()) => Outcome::Undone(format!("set {key} back to {previous}")),
            Err(e) => Outcome::Failed {
                change: change.clone(),
                reason: e.to_string(),
            },
        },
        Err(e) => Outcome::Failed {
            change: change.clone(),
            reason: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_proc_sys_and_tricks_are_refused() {
        assert_eq!(
            path_of("net.ipv4.ip_forward").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
        assert_eq!(
            path_of("net.ipv4.conf.eth-1.rp_filter").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth-1/rp_filter")
        );
        for bad in [
            "",
            "net..ipv4",
            "net/ipv4",
            "../etc/passwd",
            ".net",
            "net.ipv4.",
        ] {
            assert!(path_of(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn reads_a_real_parameter() {
        // Present on every Linux kernel with networking.
        let v = get("net.ipv4.ip_forward").unwrap();
        assert!(v == "0" || v == "1", "{v}");
    }
}
