//! The queue of packets the stack itself originates toward the TUN device.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use tokio::sync::mpsc;

use crate::NetstackError;

/// The queue of packets the stack itself writes into the TUN device (UDP and echo
/// replies), shared by [`UdpReplier`](crate::UdpReplier)s and echo tasks.
#[derive(Debug, Clone)]
pub(crate) struct Egress {
    pub(crate) packets_tx: mpsc::Sender<Vec<u8>>,
    pub(crate) ip_ident: Arc<AtomicU16>,
}

impl Egress {
    /// A fresh IPv4 identification for a packet we originate.
    pub(crate) fn next_ip_ident(&self) -> u16 {
        self.ip_ident.fetch_add(1, Ordering::Relaxed)
    }

    /// Queues a packet, waiting while the queue is full.
    pub(crate) async fn send(&self, packet: Vec<u8>) -> Result<(), NetstackError> {
        self.packets_tx
            .send(packet)
            .await
            .map_err(|_| NetstackError::StackStopped)
    }
}
