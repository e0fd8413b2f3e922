//! A carrier that is a TCP flow through another session (`expose`'s way to its relay pod
//! through the agent session the client already has).

use futures::future::BoxFuture;
use kubelan_proto::Target;

use crate::carrier::{CarrierDialer, CarrierError, CarrierKind, Dialed};
use crate::client::Session;

/// A carrier that is a TCP flow through another (outer) session: the client reaches a
/// per-session relay pod's carrier port through the agent session it already has, on
/// whichever carrier that session runs (direct or port-forward). The outer session's
/// own reconnects cut this carrier like any other; the inner session dials again.
pub struct FlowDialer {
    outer: Session,
    target: Target,
}

impl FlowDialer {
    /// Dials `target` (the relay pod's IP and carrier port) through `outer`.
    pub fn new(outer: Session, target: Target) -> FlowDialer {
        FlowDialer { outer, target }
    }
}

impl CarrierDialer for FlowDialer {
    fn dial(&self) -> BoxFuture<'_, Result<Dialed, CarrierError>> {
        Box::pin(async move {
            let conn = self.outer.connect(self.target.clone()).await.map_err(|e| {
                CarrierError::retry(format!("{} through the agent session: {e}", self.target))
            })?;
            Ok(Dialed {
                io: Box::new(conn),
                kind: CarrierKind::Flow,
                peer: self.target.to_string(),
                keepalive: None,
            })
        })
    }
}
