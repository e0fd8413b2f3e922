//! The I/O half of kube-proxy: loading a script with `nft` inside a network namespace.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use kubelan_sys::{Namespaces, enter_on_spawn};
use tokio::io::AsyncWriteExt as _;

/// How long `nft` may take before [`apply`] gives up and kills it.
const NFT_TIMEOUT: Duration = Duration::from_secs(30);

/// Failure to load a ruleset with [`apply`].
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The network namespace could not be opened or prepared for entering.
    #[error("kube-proxy: cannot use network namespace: {0}")]
    Namespace(#[from] kubelan_sys::Error),
    /// `nft` could not be started or talked to.
    #[error("kube-proxy: cannot run nft (is nftables installed?): {0}")]
    Spawn(#[source] std::io::Error),
    /// `nft` rejected the script; nothing was changed (the script is one transaction).
    #[error("kube-proxy: nft failed in {netns} ({status}): {stderr}")]
    Nft {
        /// The network namespace.
        netns: PathBuf,
        /// How `nft` exited.
        status: String,
        /// What `nft` printed on standard error.
        stderr: String,
    },
    /// `nft` did not finish in time and was killed.
    #[error("kube-proxy: nft did not finish within {0:?} in {1}")]
    Timeout(Duration, PathBuf),
}

/// Loads `script` (from [`ruleset`](super::ruleset) or [`remove_script`](super::remove_script)) with `nft -f -` inside the network
/// namespace at `netns`. The script is one transaction: on failure nothing changes.
///
/// # Errors
/// [`ProxyError::Nft`] with nft's standard error when it rejects the script, and the
/// other variants when the namespace or `nft` cannot be used.
pub async fn apply(netns: &Path, script: &str) -> Result<(), ProxyError> {
    run_nft(netns, &["-f", "-"], script).await
}

/// Runs `nft ARGS` in `netns` with `script` on standard input.
pub(super) async fn run_nft(netns: &Path, args: &[&str], script: &str) -> Result<(), ProxyError> {
    let ns = Arc::new(Namespaces::net(netns)?);
    let mut cmd = tokio::process::Command::new("nft");
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    enter_on_spawn(&mut cmd, ns, kubelan_sys::Cwd::Inherit, None)?;
    let mut child = cmd.spawn().map_err(ProxyError::Spawn)?;
    let stdin = child.stdin.take();
    let run = async move {
        // Feed the script while collecting stderr, so a chatty nft cannot deadlock us.
        let feed = async move {
            if let Some(mut stdin) = stdin {
                stdin.write_all(script.as_bytes()).await?;
                stdin.shutdown().await?;
            }
            Ok::<(), std::io::Error>(())
        };
        let (fed, output) = tokio::join!(feed, child.wait_with_output());
        let output = output.map_err(ProxyError::Spawn)?;
        if output.status.success() {
            return Ok(());
        }
        // A write error (nft exited early) matters less than what nft said.
        let mut stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        if let Err(e) = fed
            && stderr.is_empty()
        {
            stderr = format!("writing the script failed: {e}");
        }
        Err(ProxyError::Nft {
            netns: netns.to_path_buf(),
            status: output.status.to_string(),
            stderr,
        })
    };
    // On timeout the future, and with it the child, is dropped: kill_on_drop kills it.
    tokio::time::timeout(NFT_TIMEOUT, run)
        .await
        .map_err(|_| ProxyError::Timeout(NFT_TIMEOUT, netns.to_path_buf()))?
}
