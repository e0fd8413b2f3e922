//! A pod's volumes (secret, configMap, emptyDir, hostPath, projected, downwardAPI),
//! materialised in its state directory and bound into its containers.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::bail;
use base64::Engine;
use kubelan_apisim::meta;
use kubelan_sys::Bind;
use serde_json::Value;

use crate::runtime::LabContext;
use crate::sandbox;

use super::env::field_ref;
use super::res;

pub(super) fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
}

/// `/var/run/...` is `/run/...` (a symlink on the host); mount points under it must be
/// created on the sandbox's private `/run`.
pub(super) fn redirect_var_run(p: &Path) -> PathBuf {
    match p.strip_prefix("/var/run") {
        Ok(rest) => Path::new("/run").join(rest),
        Err(_) => p.to_path_buf(),
    }
}

/// Materialises the pod's volumes in its state directory and returns the bind mounts
/// (mount target, bind) for every container's volume mounts.
pub(super) fn prepare_volumes(
    ctx: &LabContext,
    pod: &Value,
    dir: &Path,
    ip: Ipv4Addr,
    host_ip: Ipv4Addr,
) -> anyhow::Result<Vec<(PathBuf, Bind)>> {
    let ns = meta::namespace(pod);
    let vols: Vec<Value> = pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut sources: HashMap<String, PathBuf> = HashMap::new();
    for v in &vols {
        let vname = meta::str_at(v, &["name"]).to_string();
        let vdir = dir.join("volumes").join(&vname);
        std::fs::create_dir_all(&vdir)?;
        set_mode(&vdir, 0o777);
        let mode = |src: &Value| {
            src.get("defaultMode")
                .and_then(Value::as_u64)
                .unwrap_or(0o644) as u32
        };
        if let Some(s) = v.get("secret") {
            let name = meta::str_at(s, &["secretName"]);
            let optional = s.get("optional").and_then(Value::as_bool).unwrap_or(false);
            match ctx.store.get(res("", "secrets"), ns, name) {
                Ok(sec) => write_keys(&vdir, &sec, "data", true, s.get("items"), mode(s))?,
                Err(_) if optional => {}
                Err(_) => bail!(
                    "MountVolume.SetUp failed for volume \"{vname}\" : secret \"{name}\" not found"
                ),
            }
        } else if let Some(c) = v.get("configMap") {
            let name = meta::str_at(c, &["name"]);
            let optional = c.get("optional").and_then(Value::as_bool).unwrap_or(false);
            match ctx.store.get(res("", "configmaps"), ns, name) {
                Ok(cm) => write_keys(&vdir, &cm, "data", false, c.get("items"), mode(c))?,
                Err(_) if optional => {}
                Err(_) => bail!(
                    "MountVolume.SetUp failed for volume \"{vname}\" : configmap \"{name}\" not found"
                ),
            }
        } else if v.get("emptyDir").is_some() {
        } else if let Some(h) = v.get("hostPath") {
            let p = PathBuf::from(meta::str_at(h, &["path"]));
            if !p.exists() {
                bail!(
                    "MountVolume.SetUp failed for volume \"{vname}\" : hostPath {} does not exist (the lab never creates host paths)",
                    p.display()
                );
            }
            sources.insert(vname, p);
            continue;
        } else if let Some(p) = v.get("projected") {
            for src in p
                .get("sources")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(t) = src.get("serviceAccountToken") {
                    let sa = meta::str_at(pod, &["spec", "serviceAccountName"]);
                    let token = ctx.auth.mint_service_account_token(
                        ns,
                        if sa.is_empty() { "default" } else { sa },
                        Some((meta::name(pod), meta::uid(pod))),
                    );
                    let path = vdir.join(meta::str_at(t, &["path"]));
                    std::fs::write(&path, token)?;
                    set_mode(&path, 0o644);
                } else if let Some(c) = src.get("configMap") {
                    if let Ok(cm) =
                        ctx.store
                            .get(res("", "configmaps"), ns, meta::str_at(c, &["name"]))
                    {
                        write_keys(&vdir, &cm, "data", false, c.get("items"), 0o644)?;
                    }
                } else if let Some(s) = src.get("secret") {
                    if let Ok(sec) =
                        ctx.store
                            .get(res("", "secrets"), ns, meta::str_at(s, &["name"]))
                    {
                        write_keys(&vdir, &sec, "data", true, s.get("items"), 0o644)?;
                    }
                } else if let Some(d) = src.get("downwardAPI") {
                    write_downward(&vdir, pod, d, ip, host_ip)?;
                }
            }
        } else if let Some(d) = v.get("downwardAPI") {
            write_downward(&vdir, pod, d, ip, host_ip)?;
        } else {
            bail!(
                "volume \"{vname}\": only secret, configMap, emptyDir, hostPath, projected and downwardAPI volumes exist in the kubelan lab"
            );
        }
        sources.insert(vname, vdir);
    }
    // As the kubelet does: volumes the kubelet writes belong to the pod's fsGroup, so a
    // non-root container can read a Secret mounted with mode 0440.
    if let Some(gid) = pod
        .pointer("/spec/securityContext/fsGroup")
        .and_then(Value::as_u64)
        .and_then(|g| u32::try_from(g).ok())
    {
        for v in &vols {
            if v.get("hostPath").is_none() {
                chown_group_tree(&dir.join("volumes").join(meta::str_at(v, &["name"])), gid)?;
            }
        }
    }
    let mut binds = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for c in pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .chain(
            pod.pointer("/spec/initContainers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten(),
        )
    {
        for m in c
            .get("volumeMounts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let vname = meta::str_at(m, &["name"]);
            let target = PathBuf::from(meta::str_at(m, &["mountPath"]));
            let Some(src) = sources.get(vname) else {
                bail!(
                    "container {} mounts volume \"{vname}\", which the pod does not define",
                    meta::str_at(c, &["name"])
                );
            };
            if !target.is_absolute() {
                bail!("volume mount path {} must be absolute", target.display());
            }
            let top = sandbox::top_level(&target).unwrap_or_default();
            let allowed = ["/etc", "/var", "/usr/local", "/run", "/tmp", "/root"]
                .contains(&top.as_str())
                || (sandbox::EXTRA_ROOTS.contains(&top.as_str()) && Path::new(&top).is_dir());
            if !allowed {
                bail!(
                    "volume mount path {} is outside the directories a lab pod may write ({}, {}); the lab shares the machine's file system and never creates directories on it",
                    target.display(),
                    "/etc, /var, /usr/local, /run, /tmp, /root",
                    sandbox::EXTRA_ROOTS.join(", ")
                );
            }
            let sub = meta::str_at(m, &["subPath"]);
            let source = if sub.is_empty() {
                src.clone()
            } else {
                src.join(sub)
            };
            let target = redirect_var_run(&target);
            if seen.insert(target.clone()) {
                binds.push((
                    target.clone(),
                    Bind {
                        source,
                        target,
                        readonly: m.get("readOnly").and_then(Value::as_bool).unwrap_or(false),
                    },
                ));
            }
        }
    }
    Ok(binds)
}

fn write_keys(
    dir: &Path,
    obj: &Value,
    field: &str,
    base64_values: bool,
    items: Option<&Value>,
    mode: u32,
) -> anyhow::Result<()> {
    let empty = serde_json::Map::new();
    let data = obj.get(field).and_then(Value::as_object).unwrap_or(&empty);
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    let decode = |v: &Value| -> Vec<u8> {
        let s = v.as_str().unwrap_or("");
        if base64_values {
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .unwrap_or_default()
        } else {
            s.as_bytes().to_vec()
        }
    };
    match items.and_then(Value::as_array) {
        Some(items) => {
            for it in items {
                let k = meta::str_at(it, &["key"]);
                if let Some(v) = data.get(k) {
                    entries.push((meta::str_at(it, &["path"]).to_string(), decode(v)));
                }
            }
        }
        None => entries.extend(data.iter().map(|(k, v)| (k.clone(), decode(v)))),
    }
    if !base64_values && let Some(bin) = obj.get("binaryData").and_then(Value::as_object) {
        for (k, v) in bin {
            entries.push((
                k.clone(),
                base64::engine::general_purpose::STANDARD
                    .decode(v.as_str().unwrap_or(""))
                    .unwrap_or_default(),
            ));
        }
    }
    for (rel, bytes) in entries {
        if rel.contains("..") {
            bail!("volume item path {rel:?} may not contain '..'");
        }
        let p = dir.join(&rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, bytes)?;
        set_mode(&p, mode);
    }
    Ok(())
}

fn write_downward(
    dir: &Path,
    pod: &Value,
    src: &Value,
    ip: Ipv4Addr,
    host_ip: Ipv4Addr,
) -> anyhow::Result<()> {
    for it in src
        .get("items")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let rel = meta::str_at(it, &["path"]);
        if rel.contains("..") {
            bail!("downwardAPI item path {rel:?} may not contain '..'");
        }
        let value = match it.pointer("/fieldRef/fieldPath").and_then(Value::as_str) {
            Some(f) => field_ref(pod, f, ip, host_ip),
            None => "0".to_string(),
        };
        let p = dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, value)?;
        set_mode(&p, 0o644);
    }
    Ok(())
}

/// Gives `gid` group ownership of `root` and everything below it.
fn chown_group_tree(root: &Path, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(root, None, Some(gid))?;
    if root.is_dir() && !root.is_symlink() {
        for entry in std::fs::read_dir(root)? {
            chown_group_tree(&entry?.path(), gid)?;
        }
    }
    Ok(())
}
