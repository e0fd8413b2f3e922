//! Split DNS on systems without a backend yet (macOS `/etc/resolver/<domain>` files and
//! Windows NRPT rules belong here, one file per OS).

use super::{DnsError, DnsPlan};
use crate::journal::record::{Change, HostGuard, Outcome};

/// Always [`DnsError::Unsupported`]; nothing is changed or recorded.
pub(super) fn apply(_guard: &mut HostGuard, _plan: &DnsPlan) -> Result<(), DnsError> {
    Err(DnsError::Unsupported)
}

/// A journal from another OS cannot be undone here.
pub(super) fn undo(change: &Change) -> Outcome {
    Outcome::Failed {
        change: change.clone(),
        reason: DnsError::Unsupported.to_string(),
    }
}
