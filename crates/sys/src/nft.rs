//! nftables tables owned by kubelan, changed through the host guard.
//!
//! kubelan never edits other tables: everything it needs (the gateway's SNAT and counters)
//! lives in one table of its own, created in a single atomic batch by the `nft` program
//! (the `nftables` crate's JSON schema, fed to `nft -j -f -`) and removed as a whole. Counters are read
//! back from `nft -j`; they are parsed here as 64-bit numbers (the crate's schema types
//! keep them in 32 bits, which overflows after 4 GiB).

pub mod build;

use std::collections::BTreeMap;

use nftables::schema::{NfListObject, NfObject, Nftables, Table};
use nftables::types::NfFamily;

use crate::error::ApplyError;
pub use crate::error::NftError;
use crate::journal::record::{Change, HostGuard, Outcome};

/// Feeds a JSON batch to `nft -j -f -`, keeping its error text.
async fn apply(batch: &Nftables<'_>) -> Result<(), NftError> {
    use tokio::io::AsyncWriteExt;
    let json = serde_json::to_vec(batch).map_err(|e| NftError::Output(e.to_string()))?;
    let mut child = tokio::process::Command::new("nft")
        .args(["-j", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| NftError::Nft(format!("cannot run nft: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(&json)
            .await
            .map_err(|e| NftError::Nft(format!("writing to nft: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| NftError::Nft(format!("waiting for nft: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NftError::Refused(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// The name nft uses for a family (`ip`, `ip6`, `inet`).
pub fn family_name(family: NfFamily) -> &'static str {
    match family {
        NfFamily::IP => "ip",
        NfFamily::IP6 => "ip6",
        NfFamily::INet => "inet",
        NfFamily::ARP => "arp",
        NfFamily::Bridge => "bridge",
        NfFamily::NetDev => "netdev",
    }
}

fn family_from(name: &str) -> Option<NfFamily> {
    Some(match name {
        "ip" => NfFamily::IP,
        "ip6" => NfFamily::IP6,
        "inet" => NfFamily::INet,
        "arp" => NfFamily::ARP,
        "bridge" => NfFamily::Bridge,
        "netdev" => NfFamily::NetDev,
        _ => return None,
    })
}

async fn nft_json(args: &[&str]) -> Result<serde_json::Value, NftError> {
    let out = tokio::process::Command::new("nft")
        .arg("-j")
        .args(args)
        .output()
        .await
        .map_err(|e| NftError::Nft(format!("cannot run nft: {e}")))?;
    if !out.status.success() {
        return Err(NftError::Nft(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| NftError::Output(e.to_string()))
}

/// Whether table `family name` exists.
///
/// # Errors
/// [`NftError`] when nft cannot be run.
pub async fn table_exists(family: NfFamily, name: &str) -> Result<bool, NftError> {
    let v = nft_json(&["list", "tables"]).await?;
    Ok(objects(&v, "table").any(|t| {
        t["family"].as_str() == Some(family_name(family)) && t["name"].as_str() == Some(name)
    }))
}

fn objects<'a>(
    v: &'a serde_json::Value,
    kind: &'a str,
) -> impl Iterator<Item = &'a serde_json::Value> {
    v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(move |o| o.get(kind))
}

/// Creates table `family name` with the objects of `body` (chains, sets, counters, rules —
/// all naming that table) in one atomic batch, after recording it in `guard`. Fails,
/// changing nothing, when the table already exists.
///
/// # Errors
/// [`ApplyError::Nft`] when nft refuses the batch (the journal entry is withdrawn),
/// [`ApplyError::Journal`] when the journal cannot be written.
pub async fn create_table(
    guard: &mut HostGuard,
    family: NfFamily,
    name: &str,
    body: Vec<NfListObject<'static>>,
) -> Result<(), ApplyError> {
    if table_exists(family, name).await? {
        return Err(NftError::Nft(format!(
            "table {} {name} already exists: another kubelan gateway runs here, or one crashed (`sudo kubelan reset`)",
            family_name(family)
        ))
        .into());
    }
    let change = Change::NftTable {
        family: family_name(family).to_string(),
        name: name.to_string(),
    };
    guard.record(change.clone())?;
    let mut objects = vec![NfObject::CmdObject(nftables::schema::NfCmd::Add(
        NfListObject::Table(Table {
            family,
            name: name.to_string().into(),
            handle: None,
        }),
    ))];
    objects.extend(
        body.into_iter()
            .map(|o| NfObject::CmdObject(nftables::schema::NfCmd::Add(o))),
    );
    let batch = Nftables {
        objects: objects.into(),
    };
    if let Err(e) = apply(&batch).await {
        guard.unrecord(&change);
        return Err(e.into());
    }
    Ok(())
}

/// Packets and bytes of each named counter of table `family name`.
///
/// # Errors
/// [`NftError`] when nft fails (for example when the table is gone).
pub async fn counters(
    family: NfFamily,
    name: &str,
) -> Result<BTreeMap<String, (u64, u64)>, NftError> {
    let v = nft_json(&["list", "counters", "table", family_name(family), name]).await?;
    Ok(objects(&v, "counter")
        .filter_map(|c| {
            Some((
                c["name"].as_str()?.to_string(),
                (c["packets"].as_u64()?, c["bytes"].as_u64()?),
            ))
        })
        .collect())
}

/// Number of elements in set `set` of table `family name` (e.g. clients seen).
///
/// # Errors
/// [`NftError`] when nft fails.
pub async fn set_len(family: NfFamily, table: &str, set: &str) -> Result<usize, NftError> {
    let v = nft_json(&["list", "set", family_name(family), table, set]).await?;
    Ok(objects(&v, "set")
        .next()
        .and_then(|s| s["elem"].as_array())
        .map_or(0, Vec::len))
}

/// Whether chain `chain` of table `family table` has a rule that masquerades (the node
/// gateway's SNAT rule).
///
/// # Errors
/// [`NftError`] when nft fails (for example when the table or the chain is missing).
pub async fn chain_masquerades(
    family: NfFamily,
    table: &str,
    chain: &str,
) -> Result<bool, NftError> {
    let v = nft_json(&["list", "chain", family_name(family), table, chain]).await?;
    Ok(masquerades(&v))
}

/// Whether a rule of an `nft -j list ...` answer has a `masquerade` statement.
fn masquerades(v: &serde_json::Value) -> bool {
    objects(v, "rule").any(|r| {
        r["expr"]
            .as_array()
            .is_some_and(|e| e.iter().any(|s| s.get("masquerade").is_some()))
    })
}

/// Undoes a [`Change::NftTable`]: deletes the whole table.
pub(crate) async fn undo_table(family: &str, name: &str, change: &Change) -> Outcome {
    let Some(fam) = family_from(family) else {
        return Outcome::Failed {
            change: change.clone(),
            reason: format!("unknown nftables family {family:?}"),
        };
    };
    match table_exists(fam, name).await {
        Ok(false) => {
            return Outcome::AlreadyGone(format!("nftables table {family} {name} is already gone"));
        }
        Ok(true) => {}
        Err(e) => {
            return Outcome::Failed {
                change: change.clone(),
                reason: e.to_string(),
            };
        }
    }
    let out = tokio::process::Command::new("nft")
        .args(["delete", "table", family, name])
        .output()
        .await;
    match out {
        Ok(o) if o.status.success() => {
            Outcome::Undone(format!("deleted nftables table {family} {name}"))
        }
        Ok(o) => Outcome::Failed {
            change: change.clone(),
            reason: String::from_utf8_lossy(&o.stderr).trim().to_string(),
        },
        Err(e) => Outcome::Failed {
            change: change.clone(),
            reason: format!("cannot run nft: {e}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_names_round_trip() {
        for f in [
            NfFamily::IP,
            NfFamily::IP6,
            NfFamily::INet,
            NfFamily::ARP,
            NfFamily::Bridge,
            NfFamily::NetDev,
        ] {
            assert_eq!(family_from(family_name(f)), Some(f));
        }
        assert_eq!(family_from("ipx"), None);
    }

    #[test]
    fn a_masquerade_statement_is_found_in_the_chains_rules() {
        let with: serde_json::Value = serde_json::from_str(
            r#"{"nftables":[{"metainfo":{"version":"1.0.6"}},
               {"chain":{"family":"ip","table":"kubelan","name":"postrouting","handle":9}},
               {"rule":{"family":"ip","table":"kubelan","chain":"postrouting","handle":12,
                 "comment":"kubelan: LAN clients appear as this host",
                 "expr":[{"match":{"op":"==","left":{"payload":{"protocol":"ip","field":"saddr"}},"right":"@lan"}},
                         {"counter":"snat"},{"masquerade":null}]}}]}"#,
        )
        .unwrap();
        assert!(masquerades(&with));
        let without: serde_json::Value = serde_json::from_str(
            r#"{"nftables":[{"rule":{"family":"ip","table":"kubelan","chain":"postrouting","handle":12,
                 "comment":"masquerade","expr":[{"counter":"snat"},{"accept":null}]}}]}"#,
        )
        .unwrap();
        assert!(!masquerades(&without));
    }

    #[test]
    fn counters_are_read_as_64_bit() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"nftables":[{"metainfo":{"version":"1.0.6"}},
               {"counter":{"family":"ip","name":"up","table":"kubelan","handle":2,"packets":5000000000,"bytes":7000000000000}}]}"#,
        )
        .unwrap();
        let c: Vec<_> = objects(&v, "counter").collect();
        assert_eq!(c[0]["bytes"].as_u64(), Some(7_000_000_000_000));
    }
}
