//! A container's environment: `env`, `envFrom`, field references, Service variables and
//! `$(VAR)` expansion.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use base64::Engine;
use kubelan_apisim::meta;
use serde_json::Value;

use super::pod_run::PodRun;
use super::res;

/// A failure to start a container, with the reason the kubelet would report.
pub(super) struct StartError {
    pub(super) reason: &'static str,
    pub(super) message: String,
}

pub(super) fn field_ref(pod: &Value, path: &str, ip: Ipv4Addr, host_ip: Ipv4Addr) -> String {
    if let Some(rest) = path
        .strip_prefix("metadata.labels['")
        .and_then(|r| r.strip_suffix("']"))
    {
        return meta::str_at(pod, &["metadata", "labels", rest]).to_string();
    }
    if let Some(rest) = path
        .strip_prefix("metadata.annotations['")
        .and_then(|r| r.strip_suffix("']"))
    {
        return meta::str_at(pod, &["metadata", "annotations", rest]).to_string();
    }
    match path {
        "status.podIP" | "status.podIPs" => ip.to_string(),
        "status.hostIP" | "status.hostIPs" => host_ip.to_string(),
        "metadata.labels" | "metadata.annotations" => {
            let key = path.trim_start_matches("metadata.");
            meta::metadata(pod)
                .get(key)
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_default()
        }
        _ => {
            let parts: Vec<&str> = path.split('.').collect();
            match meta::at(pod, &parts) {
                Some(Value::String(s)) => s.clone(),
                Some(v) if !v.is_null() => v.to_string(),
                _ => String::new(),
            }
        }
    }
}

/// Expands `$(VAR)` references as Kubernetes does (`$$` escapes; unknown references stay).
pub(super) fn expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            if b[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if b[i + 1] == b'('
                && let Some(end) = s[i + 2..].find(')')
            {
                let name = &s[i + 2..i + 2 + end];
                if let Some(v) = env.get(name) {
                    out.push_str(v);
                } else {
                    out.push_str(&s[i..i + 3 + end]);
                }
                i += 3 + end;
                continue;
            }
        }
        let ch = s[i..].chars().next().unwrap_or('?');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

fn env_name(svc: &str) -> String {
    svc.to_uppercase().replace('-', "_")
}

pub(super) fn build_env(run: &PodRun, c: &Value) -> Result<BTreeMap<String, String>, StartError> {
    let ctx = &run.ctx;
    let cfg = &ctx.record.config;
    let mut env = BTreeMap::new();
    env.insert(
        "PATH".into(),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
    );
    env.insert("HOME".into(), "/root".into());
    let hostname = {
        let h = meta::str_at(&run.pod, &["spec", "hostname"]);
        if h.is_empty() {
            run.name.clone()
        } else {
            h.to_string()
        }
    };
    env.insert("HOSTNAME".into(), hostname);
    // Service environment variables: `kubernetes` always, the namespace's others when
    // service links are enabled.
    let links = run
        .pod
        .pointer("/spec/enableServiceLinks")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let svcs = ctx.store.list_all(res("", "services"), None);
    for s in &svcs {
        let (sns, sname) = (meta::namespace(s), meta::name(s));
        let is_master = sns == "default" && sname == "kubernetes";
        if !(is_master || (links && sns == run.ns)) {
            continue;
        }
        let ip = meta::str_at(s, &["spec", "clusterIP"]);
        if ip.is_empty() || ip == "None" {
            continue;
        }
        let n = env_name(sname);
        let ports = s
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        env.insert(format!("{n}_SERVICE_HOST"), ip.to_string());
        env.insert(format!("{n}_SERVICE_PORT"), first["port"].to_string());
        for p in &ports {
            let port = p["port"].to_string();
            let proto = meta::str_at(p, &["protocol"]).to_string();
            let pname = meta::str_at(p, &["name"]);
            if !pname.is_empty() {
                env.insert(
                    format!("{n}_SERVICE_PORT_{}", env_name(pname)),
                    port.clone(),
                );
            }
            let lower = proto.to_lowercase();
            let base = format!("{n}_PORT_{port}_{proto}");
            env.insert(base.clone(), format!("{lower}://{ip}:{port}"));
            env.insert(format!("{base}_PROTO"), lower.clone());
            env.insert(format!("{base}_PORT"), port.clone());
            env.insert(format!("{base}_ADDR"), ip.to_string());
        }
        env.insert(
            format!("{n}_PORT"),
            format!(
                "{}://{ip}:{}",
                meta::str_at(first, &["protocol"]).to_lowercase(),
                first["port"]
            ),
        );
    }
    let _ = cfg;
    // envFrom.
    for ef in c
        .get("envFrom")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let prefix = meta::str_at(ef, &["prefix"]);
        let (r, src, b64) = if let Some(s) = ef.get("secretRef") {
            (res("", "secrets"), s, true)
        } else if let Some(s) = ef.get("configMapRef") {
            (res("", "configmaps"), s, false)
        } else {
            continue;
        };
        let name = meta::str_at(src, &["name"]);
        match ctx.store.get(r, &run.ns, name) {
            Ok(o) => {
                for (k, v) in o
                    .get("data")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                {
                    let s = v.as_str().unwrap_or("");
                    let val = if b64 {
                        String::from_utf8_lossy(
                            &base64::engine::general_purpose::STANDARD
                                .decode(s)
                                .unwrap_or_default(),
                        )
                        .into_owned()
                    } else {
                        s.to_string()
                    };
                    env.insert(format!("{prefix}{k}"), val);
                }
            }
            Err(_) if src.get("optional").and_then(Value::as_bool) == Some(true) => {}
            Err(_) => {
                return Err(StartError {
                    reason: "CreateContainerConfigError",
                    message: format!("{} \"{name}\" not found", r.singular),
                });
            }
        }
    }
    // env, in order, with $(VAR) expansion against what is defined so far.
    for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
        let k = meta::str_at(e, &["name"]).to_string();
        let val = if let Some(v) = e.get("value").and_then(Value::as_str) {
            expand(v, &env)
        } else if let Some(vf) = e.get("valueFrom") {
            if let Some(fr) = vf.pointer("/fieldRef/fieldPath").and_then(Value::as_str) {
                field_ref(&run.pod, fr, run.ip, run.host_ip)
            } else if let Some(sk) = vf.get("secretKeyRef").or_else(|| vf.get("configMapKeyRef")) {
                let is_secret = vf.get("secretKeyRef").is_some();
                let r = if is_secret {
                    res("", "secrets")
                } else {
                    res("", "configmaps")
                };
                let name = meta::str_at(sk, &["name"]);
                let key = meta::str_at(sk, &["key"]);
                let optional = sk.get("optional").and_then(Value::as_bool).unwrap_or(false);
                let obj = ctx.store.get(r, &run.ns, name);
                match obj.ok().and_then(|o| {
                    o.pointer(&format!("/data/{key}"))
                        .and_then(Value::as_str)
                        .map(String::from)
                }) {
                    Some(v) if is_secret => String::from_utf8_lossy(
                        &base64::engine::general_purpose::STANDARD
                            .decode(v)
                            .unwrap_or_default(),
                    )
                    .into_owned(),
                    Some(v) => v,
                    None if optional => continue,
                    None => {
                        return Err(StartError {
                            reason: "CreateContainerConfigError",
                            message: format!(
                                "couldn't find key {key} in {} {}/{name}",
                                if is_secret { "Secret" } else { "ConfigMap" },
                                run.ns
                            ),
                        });
                    }
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        env.insert(k, val);
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn expansion() {
        let env = BTreeMap::from([("A".to_string(), "1".to_string())]);
        assert_eq!(expand("x$(A)y", &env), "x1y");
        assert_eq!(expand("$(B)", &env), "$(B)");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("é$(A", &env), "é$(A");
    }
}
