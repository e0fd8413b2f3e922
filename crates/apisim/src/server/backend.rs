//! What the API server needs from the node side.

use std::path::PathBuf;

use futures::future::BoxFuture;
use tokio::net::TcpStream;

/// What the API server needs from the node side: reaching a pod's port and its logs.
pub trait PodBackend: Send + Sync + 'static {
    /// Opens a TCP connection to `port` inside the pod's network namespace.
    fn dial(
        &self,
        namespace: &str,
        pod: &str,
        port: u16,
    ) -> BoxFuture<'static, std::io::Result<TcpStream>>;

    /// The log file of a container (the previous instance's when `previous`).
    fn log_file(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        previous: bool,
    ) -> Option<PathBuf>;
}
