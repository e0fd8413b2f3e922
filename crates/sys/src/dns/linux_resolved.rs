//! The systemd-resolved backend: per-link DNS on the TUN link through `resolvectl`. The
//! cluster domains become routing-only domains of the link and the link is never a default
//! route, so resolved keeps sending every other name where it did before. Undo is
//! `resolvectl revert LINK`, which is also what happens by itself when the link disappears.

use std::net::IpAddr;
use std::path::Path;

use super::{DnsError, DnsPlan, Resolved};
use crate::journal::record::{Change, HostGuard, Outcome};

async fn resolvectl(program: &Path, args: &[String]) -> Result<(), DnsError> {
    let command = format!("{} {}", program.display(), args.join(" "));
    let out = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|source| DnsError::Spawn {
            program: program.display().to_string(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(DnsError::Resolvectl {
            command,
            stderr: if stderr.is_empty() {
                out.status.to_string()
            } else {
                stderr
            },
        })
    }
}

/// The `resolvectl` argument lists for `plan`: servers, then domains (routing-only
/// `~domain`s followed by search domains), in the order they are run.
pub(super) fn commands(plan: &DnsPlan) -> Vec<Vec<String>> {
    let mut dns = vec!["dns".to_string(), plan.link.clone()];
    dns.extend(plan.servers.iter().map(|s| s.to_string()));
    let mut domain = vec!["domain".to_string(), plan.link.clone()];
    for d in &plan.routing_domains {
        let routed = format!("~{}", d.trim_start_matches('~'));
        if !domain.contains(&routed) {
            domain.push(routed);
        }
    }
    for d in &plan.search {
        if !domain.contains(d) {
            domain.push(d.clone());
        }
    }
    vec![dns, domain]
}

/// Sets the link's DNS; returns resolved's own upstreams (without our servers).
pub(super) async fn apply(
    guard: &mut HostGuard,
    resolved: &Resolved,
    plan: &DnsPlan,
) -> Result<Vec<IpAddr>, DnsError> {
    // Read before our link's servers show up in resolved's list.
    let upstreams: Vec<IpAddr> = resolved
        .upstreams()
        .into_iter()
        .filter(|ip| !plan.servers.contains(ip))
        .collect();
    let change = Change::ResolvedLink {
        link: plan.link.clone(),
        resolvectl: resolved.recorded_program(),
    };
    guard.record(change.clone())?;
    for args in commands(plan) {
        if let Err(e) = resolvectl(&resolved.resolvectl, &args).await {
            let revert = ["revert".to_string(), plan.link.clone()];
            if let Err(re) = resolvectl(&resolved.resolvectl, &revert).await {
                tracing::warn!(error = %re, "cannot revert a partial per-link DNS setup");
                // Keep the journal entry: `kubelan reset` retries the revert.
                return Err(e);
            }
            guard.unrecord(&change);
            return Err(e);
        }
    }
    // Routing-only domains already keep the link from being a default route; saying so
    // explicitly needs systemd 240 or later, so an older resolved is not an error.
    let no_default = [
        "default-route".to_string(),
        plan.link.clone(),
        "false".to_string(),
    ];
    if let Err(e) = resolvectl(&resolved.resolvectl, &no_default).await {
        tracing::warn!(error = %e, "cannot mark the link as not a default DNS route");
    }
    Ok(upstreams)
}

/// `resolvectl revert LINK`, unless the link is gone (its settings went with it).
pub(super) async fn undo(link: &str, program: Option<&Path>, change: &Change) -> Outcome {
    match crate::net::link_index(link).await {
        Err(crate::net::NetError::NoSuchLink { .. }) => {
            return Outcome::AlreadyGone(format!(
                "systemd-resolved DNS settings of link {link} went away with the link"
            ));
        }
        Err(e) => {
            return Outcome::Failed {
                change: change.clone(),
                reason: e.to_string(),
            };
        }
        Ok(_) => {}
    }
    let program = program.unwrap_or(Path::new("resolvectl"));
    match resolvectl(program, &["revert".to_string(), link.to_string()]).await {
        Ok(()) => Outcome::Undone(format!(
            "reverted systemd-resolved DNS settings of link {link}"
        )),
        Err(e) => Outcome::Failed {
            change: change.clone(),
            reason: e.to_string(),
        },
    }
}
