//! Version negotiation (compatibility rule 2 in the crate docs).

use std::fmt;

/// The newest protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// An inclusive range of protocol versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VersionRange {
    /// Oldest version spoken.
    pub min: u16,
    /// Newest version spoken.
    pub max: u16,
}

impl VersionRange {
    /// What this build speaks.
    pub const OURS: VersionRange = VersionRange {
        min: 1,
        max: PROTOCOL_VERSION,
    };
}

impl fmt::Display for VersionRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}–{}", self.min, self.max)
        }
    }
}

/// The agent cannot serve a client: no version in common.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// A sentence naming both ranges and who must upgrade.
    pub message: String,
}

/// Picks the version an agent speaking `agent` uses with a client speaking `client`: the
/// highest version in both ranges.
///
/// # Errors
///
/// [`Refusal`] when the ranges do not overlap (or a range is empty), with a message that
/// names both ranges and which side is older.
pub fn negotiate(client: VersionRange, agent: VersionRange) -> Result<u16, Refusal> {
    let lo = client.min.max(agent.min);
    let hi = client.max.min(agent.max);
    if client.min <= client.max && lo <= hi {
        return Ok(hi);
    }
    let message = if client.min > agent.max {
        format!(
            "the client speaks protocol version {client} but the agent only {agent}: the agent is older — upgrade it with `kubelan install` (same kubelan version as the client)"
        )
    } else if agent.min > client.max {
        format!(
            "the client speaks protocol version {client} but the agent only {agent}: the client is older — upgrade kubelan on this machine"
        )
    } else {
        format!("invalid protocol version range {client} from the client (agent speaks {agent})")
    };
    Err(Refusal { message })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(min: u16, max: u16) -> VersionRange {
        VersionRange { min, max }
    }

    #[test]
    fn picks_the_highest_common_version() {
        assert_eq!(negotiate(r(1, 1), r(1, 1)), Ok(1));
        assert_eq!(negotiate(r(1, 3), r(2, 5)), Ok(3));
        assert_eq!(negotiate(r(2, 5), r(1, 3)), Ok(3));
    }

    #[test]
    fn refusal_names_both_versions_and_who_upgrades() {
        let e = negotiate(r(3, 4), r(1, 2)).unwrap_err();
        assert!(
            e.message.contains("3–4") && e.message.contains("1–2"),
            "{e}"
        );
        assert!(e.message.contains("agent is older"), "{e}");
        let e = negotiate(r(1, 1), r(2, 2)).unwrap_err();
        assert!(e.message.contains("client is older"), "{e}");
        assert!(negotiate(r(3, 1), r(1, 5)).is_err());
    }
}
