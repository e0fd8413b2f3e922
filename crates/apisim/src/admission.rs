//! Defaulting, validation and allocation, run on every create and update inside the store
//! lock (so allocations cannot race).

use std::collections::HashSet;
use std::net::Ipv4Addr;

use base64::Engine;
use rand::Rng;
use serde_json::{Map, Value, json};

use crate::error::{ApiError, ApiResult, FieldError};
use crate::meta;
use crate::resources::ResourceInfo;
use crate::selector::LabelSelector;
use crate::state::{ClusterConfig, Inner};

/// Kinds whose `metadata.generation` tracks spec changes.
pub(crate) fn has_generation(res: &ResourceInfo) -> bool {
    matches!(
        res.kind,
        "Deployment" | "ReplicaSet" | "StatefulSet" | "Job"
    )
}

/// Defaults, validates and allocates for `obj` (with `old` on update).
pub(crate) fn admit(
    inner: &Inner,
    cfg: &ClusterConfig,
    res: &ResourceInfo,
    obj: &mut Value,
    old: Option<&Value>,
) -> ApiResult<()> {
    let name = meta::name(obj).to_string();
    let mut errs = validate_name(res, &name);
    validate_labels(obj, &mut errs);
    validate_owner_refs(obj, &mut errs);
    if !errs.is_empty() {
        return Err(ApiError::invalid(res.kind, &name, errs));
    }
    match res.kind {
        "Namespace" => {
            let errs: Vec<FieldError> = crate::podsecurity::label_errors(obj)
                .into_iter()
                .map(|(k, v, why)| {
                    FieldError::invalid(format!("metadata.labels[{k}]"), format!("\"{v}\""), why)
                })
                .collect();
            finish(res, &name, errs)?;
            namespace(obj, old)
        }
        "Pod" => {
            if let Some(spec) = obj.get_mut("spec") {
                default_pod_spec(spec);
            }
            if old.is_none() {
                meta::set_at(obj, &["status", "phase"], json!("Pending"));
                meta::set_at(obj, &["status", "qosClass"], json!("BestEffort"));
            }
            let mut errs = Vec::new();
            validate_pod_spec(obj.get("spec").unwrap_or(&Value::Null), "spec", &mut errs);
            if let Some(old) = old {
                check_pod_update(old, obj, &mut errs);
            }
            finish(res, &name, errs)?;
            // Pod Security admission runs after validation, on creation (pod updates cannot
            // change anything it checks).
            if old.is_none() {
                pod_security(inner, &name, obj)?;
            }
            Ok(())
        }
        "Service" => service(inner, cfg, res, &name, obj, old),
        "Deployment" | "ReplicaSet" | "StatefulSet" => workload(res, &name, obj, old),
        "Job" => job(res, &name, obj, old),
        "Secret" => secret(res, &name, obj),
        "EndpointSlice" => {
            let mut errs = Vec::new();
            match meta::str_at(obj, &["addressType"]) {
                "IPv4" | "IPv6" | "FQDN" => {}
                "" => errs.push(FieldError::required("addressType", "")),
                other => errs.push(FieldError::not_supported(
                    "addressType",
                    other,
                    &["IPv4", "IPv6", "FQDN"],
                )),
            }
            finish(res, &name, errs)
        }
        "Role" | "ClusterRole" => {
            let mut errs = Vec::new();
            if let Some(rules) = obj.get("rules").and_then(Value::as_array) {
                for (i, r) in rules.iter().enumerate() {
                    if r.get("verbs")
                        .and_then(Value::as_array)
                        .is_none_or(Vec::is_empty)
                    {
                        errs.push(FieldError::required(
                            format!("rules[{i}].verbs"),
                            "verbs must contain at least one value",
                        ));
                    }
                }
            }
            finish(res, &name, errs)
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            let mut errs = Vec::new();
            if meta::str_at(obj, &["roleRef", "name"]).is_empty() {
                errs.push(FieldError::required("roleRef.name", ""));
            }
            if let Some(old) = old
                && old.get("roleRef") != obj.get("roleRef")
            {
                errs.push(FieldError::invalid("roleRef", "", "cannot change roleRef"));
            }
            finish(res, &name, errs)
        }
        _ => Ok(()),
    }
}

/// Refuses a new pod that its namespace's enforced Pod Security level does not allow.
fn pod_security(inner: &Inner, name: &str, pod: &Value) -> ApiResult<()> {
    let nsres = crate::resources::find("", "v1", "namespaces").expect("namespaces resource");
    let Some(ns) = inner.get(nsres, "", meta::namespace(pod)) else {
        return Ok(());
    };
    let policy = crate::podsecurity::policy(ns);
    match crate::podsecurity::forbidden_message(
        &policy,
        name,
        pod.get("spec").unwrap_or(&Value::Null),
    ) {
        Some(msg) => Err(ApiError::forbidden_msg(msg)),
        None => Ok(()),
    }
}

fn finish(res: &ResourceInfo, name: &str, errs: Vec<FieldError>) -> ApiResult<()> {
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(res.kind, name, errs))
    }
}

fn validate_name(res: &ResourceInfo, name: &str) -> Vec<FieldError> {
    let problem = match res.kind {
        "Namespace" | "Service" => meta::check_dns1123_label(name),
        "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding" => {
            if name.is_empty()
                || name.contains('/')
                || name.contains('%')
                || name == "."
                || name == ".."
            {
                Some("may not contain '/' or '%' and may not be empty".into())
            } else {
                None
            }
        }
        _ => meta::check_dns1123_subdomain(name),
    };
    problem
        .map(|p| {
            vec![FieldError::invalid(
                "metadata.name",
                format!("\"{name}\""),
                p,
            )]
        })
        .unwrap_or_default()
}

fn validate_labels(obj: &Value, errs: &mut Vec<FieldError>) {
    let Some(labels) = meta::metadata(obj).get("labels") else {
        return;
    };
    let Some(map) = labels.as_object() else {
        if !labels.is_null() {
            errs.push(FieldError::invalid(
                "metadata.labels",
                "",
                "must be a map of strings",
            ));
        }
        return;
    };
    for (k, v) in map {
        let text = v.as_str().unwrap_or("");
        let selector = format!("{k}={text}");
        if !v.is_string() || LabelSelector::parse(&selector).is_err() {
            errs.push(FieldError::invalid(
                "metadata.labels",
                format!("\"{k}\": {v}"),
                "label keys and values must be valid label names (63 characters or less, alphanumeric, '-', '_' or '.')",
            ));
        }
    }
}

/// `metadata.ownerReferences`: every field set, at most one controller.
fn validate_owner_refs(obj: &Value, errs: &mut Vec<FieldError>) {
    let Some(refs) = meta::metadata(obj).get("ownerReferences") else {
        return;
    };
    let Some(refs) = refs.as_array() else {
        if !refs.is_null() {
            errs.push(FieldError::invalid(
                "metadata.ownerReferences",
                "",
                "must be a list",
            ));
        }
        return;
    };
    let mut controllers = Vec::new();
    for r in refs {
        for (field, what) in [
            ("apiVersion", "version"),
            ("kind", "kind"),
            ("name", "name"),
            ("uid", "uid"),
        ] {
            if meta::str_at(r, &[field]).is_empty() {
                errs.push(FieldError::invalid(
                    format!("metadata.ownerReferences.{field}"),
                    "\"\"",
                    format!("{what} must not be empty"),
                ));
            }
        }
        if r.get("controller").and_then(Value::as_bool) == Some(true) {
            controllers.push(meta::str_at(r, &["name"]).to_string());
        }
    }
    if controllers.len() > 1 {
        errs.push(FieldError::invalid(
            "metadata.ownerReferences",
            "",
            format!(
                "Only one reference can have Controller set to true. Found \"true\" in references for {}",
                controllers.join(" and ")
            ),
        ));
    }
}

fn namespace(obj: &mut Value, old: Option<&Value>) -> ApiResult<()> {
    let name = meta::name(obj).to_string();
    if let Some(labels) = meta::obj_at_mut(obj, &["metadata", "labels"]) {
        labels.insert("kubernetes.io/metadata.name".into(), json!(name));
    }
    if old.is_none() {
        meta::set_at(obj, &["spec", "finalizers"], json!(["kubernetes"]));
        meta::set_at(obj, &["status", "phase"], json!("Active"));
    }
    Ok(())
}

/// Fills the defaults the API server applies to a pod spec (also inside templates).
pub(crate) fn default_pod_spec(spec: &mut Value) {
    let Some(s) = spec.as_object_mut() else {
        return;
    };
    let mut def = |k: &str, v: Value| {
        s.entry(k.to_string()).or_insert(v);
    };
    def("restartPolicy", json!("Always"));
    def("dnsPolicy", json!("ClusterFirst"));
    def("terminationGracePeriodSeconds", json!(30));
    def("schedulerName", json!("default-scheduler"));
    def("securityContext", json!({}));
    def("enableServiceLinks", json!(true));
    def("priority", json!(0));
    def("preemptionPolicy", json!("PreemptLowerPriority"));
    let sa = s
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .or_else(|| s.get("serviceAccount").and_then(Value::as_str))
        .unwrap_or("default")
        .to_string();
    s.insert("serviceAccountName".into(), json!(sa));
    s.insert("serviceAccount".into(), json!(sa));
    for list in ["containers", "initContainers"] {
        if let Some(cs) = s.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                let image = c
                    .get("image")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let tag_latest = !image.contains(':') || image.ends_with(":latest");
                c.entry("imagePullPolicy").or_insert(json!(if tag_latest {
                    "Always"
                } else {
                    "IfNotPresent"
                }));
                c.entry("terminationMessagePath")
                    .or_insert(json!("/dev/termination-log"));
                c.entry("terminationMessagePolicy").or_insert(json!("File"));
                c.entry("resources").or_insert(json!({}));
                if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        p.entry("protocol").or_insert(json!("TCP"));
                    }
                }
                for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
                    if let Some(p) = c.get_mut(probe).and_then(Value::as_object_mut) {
                        p.entry("periodSeconds").or_insert(json!(10));
                        p.entry("timeoutSeconds").or_insert(json!(1));
                        p.entry("successThreshold").or_insert(json!(1));
                        p.entry("failureThreshold").or_insert(json!(3));
                    }
                }
            }
        }
    }
}

fn validate_pod_spec(spec: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let containers = spec.get("containers").and_then(Value::as_array);
    let Some(containers) = containers.filter(|c| !c.is_empty()) else {
        errs.push(FieldError::required(format!("{path}.containers"), ""));
        return;
    };
    let mut names = HashSet::new();
    for (i, c) in containers.iter().enumerate() {
        let cname = meta::str_at(c, &["name"]);
        let cpath = format!("{path}.containers[{i}]");
        if cname.is_empty() {
            errs.push(FieldError::required(format!("{cpath}.name"), ""));
        } else if let Some(p) = meta::check_dns1123_label(cname) {
            errs.push(FieldError::invalid(
                format!("{cpath}.name"),
                format!("\"{cname}\""),
                p,
            ));
        } else if !names.insert(cname.to_string()) {
            errs.push(FieldError::duplicate(
                format!("{cpath}.name"),
                format!("\"{cname}\""),
            ));
        }
        if meta::str_at(c, &["image"]).is_empty() {
            errs.push(FieldError::required(format!("{cpath}.image"), ""));
        }
        if let Some(ports) = c.get("ports").and_then(Value::as_array) {
            for (j, p) in ports.iter().enumerate() {
                let port = p.get("containerPort").and_then(Value::as_i64).unwrap_or(0);
                if !(1..=65535).contains(&port) {
                    errs.push(FieldError::invalid(
                        format!("{cpath}.ports[{j}].containerPort"),
                        port.to_string(),
                        "must be between 1 and 65535, inclusive",
                    ));
                }
            }
        }
    }
    let rp = meta::str_at(spec, &["restartPolicy"]);
    if !["Always", "OnFailure", "Never"].contains(&rp) {
        errs.push(FieldError::not_supported(
            format!("{path}.restartPolicy"),
            rp,
            &["Always", "OnFailure", "Never"],
        ));
    }
}

/// Pod specs are immutable except for images and a few fields; `nodeName` may be set once
/// (that is what a binding does).
fn check_pod_update(old: &Value, new: &Value, errs: &mut Vec<FieldError>) {
    let mask = |v: &Value| {
        let mut s = v.get("spec").cloned().unwrap_or(Value::Null);
        if let Some(o) = s.as_object_mut() {
            o.remove("activeDeadlineSeconds");
            o.remove("tolerations");
            o.remove("terminationGracePeriodSeconds");
            for list in ["containers", "initContainers"] {
                if let Some(cs) = o.get_mut(list).and_then(Value::as_array_mut) {
                    for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                        c.remove("image");
                    }
                }
            }
        }
        s
    };
    let mut old_spec = mask(old);
    let new_spec = mask(new);
    let old_node = meta::str_at(old, &["spec", "nodeName"]);
    if old_node.is_empty()
        && let Some(n) = new_spec.get("nodeName")
    {
        meta::set_at(&mut old_spec, &["nodeName"], n.clone());
    }
    if old_spec != new_spec {
        errs.push(FieldError::forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        ));
    }
}

fn service(
    inner: &Inner,
    cfg: &ClusterConfig,
    res: &ResourceInfo,
    name: &str,
    obj: &mut Value,
    old: Option<&Value>,
) -> ApiResult<()> {
    let mut errs = Vec::new();
    let spec = meta::obj_at_mut(obj, &["spec"])
        .ok_or_else(|| ApiError::bad_request("spec must be an object"))?;
    let ty = spec
        .entry("type")
        .or_insert(json!("ClusterIP"))
        .as_str()
        .unwrap_or("")
        .to_string();
    if !["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(&ty.as_str()) {
        errs.push(FieldError::not_supported(
            "spec.type",
            &ty,
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        ));
        return finish(res, name, errs);
    }
    spec.entry("sessionAffinity").or_insert(json!("None"));
    if ty == "ExternalName" {
        if spec
            .get("externalName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            errs.push(FieldError::required("spec.externalName", ""));
        }
        return finish(res, name, errs);
    }
    spec.entry("internalTrafficPolicy")
        .or_insert(json!("Cluster"));
    spec.entry("ipFamilies").or_insert(json!(["IPv4"]));
    spec.entry("ipFamilyPolicy").or_insert(json!("SingleStack"));
    if ty != "ClusterIP" {
        spec.entry("externalTrafficPolicy")
            .or_insert(json!("Cluster"));
    }
    let old_ip = old.map(|o| meta::str_at(o, &["spec", "clusterIP"]).to_string());
    let want_ip = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .or_else(|| {
            spec.get("clusterIPs")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(Value::as_str)
        })
        .unwrap_or("")
        .to_string();
    let headless = want_ip == "None";
    // Ports.
    let mut port_names = HashSet::new();
    let ports_len = spec
        .get("ports")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if ports_len == 0 && !headless {
        errs.push(FieldError::required("spec.ports", ""));
    }
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for (i, p) in ports.iter_mut().enumerate() {
            let Some(p) = p.as_object_mut() else {
                errs.push(FieldError::invalid(
                    format!("spec.ports[{i}]"),
                    "",
                    "must be an object",
                ));
                continue;
            };
            let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
            if !(1..=65535).contains(&port) {
                errs.push(FieldError::invalid(
                    format!("spec.ports[{i}].port"),
                    port.to_string(),
                    "must be between 1 and 65535, inclusive",
                ));
            }
            let proto = p
                .entry("protocol")
                .or_insert(json!("TCP"))
                .as_str()
                .unwrap_or("")
                .to_string();
            if !["TCP", "UDP", "SCTP"].contains(&proto.as_str()) {
                errs.push(FieldError::not_supported(
                    format!("spec.ports[{i}].protocol"),
                    &proto,
                    &["SCTP", "TCP", "UDP"],
                ));
            }
            p.entry("targetPort").or_insert(json!(port));
            let pname = p
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if ports_len > 1 && pname.is_empty() {
                errs.push(FieldError::required(format!("spec.ports[{i}].name"), ""));
            } else if !pname.is_empty() && !port_names.insert(pname.clone()) {
                errs.push(FieldError::duplicate(
                    format!("spec.ports[{i}].name"),
                    format!("\"{pname}\""),
                ));
            }
        }
    }
    // Cluster IP.
    let ip = match (&old_ip, want_ip.as_str()) {
        (Some(old_ip), w) if !old_ip.is_empty() => {
            if !w.is_empty() && w != old_ip {
                errs.push(FieldError::invalid(
                    "spec.clusterIPs[0]",
                    format!("[]string{{\"{w}\"}}"),
                    "may not change once set",
                ));
            }
            old_ip.clone()
        }
        (_, "None") => "None".to_string(),
        (_, "") => match allocate_ip(inner, cfg) {
            Some(ip) => ip.to_string(),
            None => {
                return Err(ApiError::internal(format!(
                    "failed to allocate a serviceIP: range is full ({})",
                    cfg.service_cidr
                )));
            }
        },
        (_, w) if w.parse::<std::net::Ipv6Addr>().is_ok() => {
            // The simulated cluster is IPv4 single-stack; a real one says so like this
            // (pkg/registry/core/service/storage/alloc.go, initIPFamilyFields).
            errs.push(FieldError::invalid(
                "spec.clusterIPs[0]",
                format!("[]string{{\"{w}\"}}"),
                "IPv6 is not configured on this cluster",
            ));
            w.to_string()
        }
        (_, w) => {
            let parsed: Option<Ipv4Addr> = w.parse().ok();
            match parsed {
                None => errs.push(FieldError::invalid(
                    "spec.clusterIPs[0]",
                    format!("\"{w}\""),
                    "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                )),
                Some(a)
                    if !cfg.service_cidr.contains(&a)
                        || a == cfg.service_cidr.network()
                        || a == cfg.service_cidr.broadcast() =>
                {
                    errs.push(FieldError::invalid(
                        "spec.clusterIPs",
                        format!("[]string{{\"{w}\"}}"),
                        format!("failed to allocate IP {w}: the provided IP ({w}) is not in the valid range. The range of valid IPs is {}", cfg.service_cidr),
                    ));
                }
                Some(a) if ip_taken(inner, a, meta::namespace(obj), name) => {
                    errs.push(FieldError::invalid(
                        "spec.clusterIPs",
                        format!("[]string{{\"{w}\"}}"),
                        format!("failed to allocate IP {w}: provided IP is already allocated"),
                    ));
                }
                Some(_) => {}
            }
            w.to_string()
        }
    };
    let spec = meta::obj_at_mut(obj, &["spec"]).expect("spec exists");
    spec.insert("clusterIP".into(), json!(ip));
    spec.insert("clusterIPs".into(), json!([ip]));
    // Node ports.
    if ty == "NodePort" || ty == "LoadBalancer" {
        let taken = node_ports_taken(inner, meta::namespace(obj), name);
        let old_ports: Vec<(i64, i64)> = old
            .and_then(|o| o.pointer("/spec/ports"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|p| {
                        (
                            p.get("port").and_then(Value::as_i64).unwrap_or(0),
                            p.get("nodePort").and_then(Value::as_i64).unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut mine = HashSet::new();
        let spec = meta::obj_at_mut(obj, &["spec"]).expect("spec exists");
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for (i, p) in ports.iter_mut().enumerate() {
                let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
                let np = p.get("nodePort").and_then(Value::as_i64).unwrap_or(0);
                let (lo, hi) = (
                    i64::from(cfg.node_port_range.0),
                    i64::from(cfg.node_port_range.1),
                );
                let chosen = if np != 0 {
                    if !(lo..=hi).contains(&np) {
                        errs.push(FieldError::invalid(format!("spec.ports[{i}].nodePort"), np.to_string(), format!("provided port is not in the valid range. The range of valid ports is {lo}-{hi}")));
                    } else if taken.contains(&np) || mine.contains(&np) {
                        errs.push(FieldError::invalid(
                            format!("spec.ports[{i}].nodePort"),
                            np.to_string(),
                            "provided port is already allocated",
                        ));
                    }
                    np
                } else if let Some((_, keep)) =
                    old_ports.iter().find(|(op, onp)| *op == port && *onp != 0)
                {
                    *keep
                } else {
                    let mut rng = rand::rng();
                    let mut pick = 0;
                    for _ in 0..10_000 {
                        let c = rng.random_range(lo..=hi);
                        if !taken.contains(&c) && !mine.contains(&c) {
                            pick = c;
                            break;
                        }
                    }
                    pick
                };
                mine.insert(chosen);
                if let Some(o) = p.as_object_mut() {
                    o.insert("nodePort".into(), json!(chosen));
                }
            }
        }
    }
    if old.is_none() {
        meta::set_at(obj, &["status", "loadBalancer"], json!({}));
    }
    finish(res, name, errs)
}

fn services(inner: &Inner) -> impl Iterator<Item = &Value> {
    inner.all_of("services")
}

fn ip_taken(inner: &Inner, ip: Ipv4Addr, ns: &str, name: &str) -> bool {
    let s = ip.to_string();
    services(inner).any(|svc| {
        meta::str_at(svc, &["spec", "clusterIP"]) == s
            && !(meta::namespace(svc) == ns && meta::name(svc) == name)
    })
}

fn allocate_ip(inner: &Inner, cfg: &ClusterConfig) -> Option<Ipv4Addr> {
    let taken: HashSet<String> = services(inner)
        .map(|s| meta::str_at(s, &["spec", "clusterIP"]).to_string())
        .collect();
    let net = cfg.service_cidr;
    let base = u32::from(net.network());
    let size = 1u64 << (32 - u32::from(net.prefix_len()));
    if size < 4 {
        return None;
    }
    // Like the real allocator, dynamic addresses come from the upper part of the range so
    // the lower part stays free for Services that ask for a fixed address.
    let lower = (size / 16).clamp(1, 256) as u32;
    let upper = (size - 2) as u32;
    let mut rng = rand::rng();
    let valid = |off: u32| {
        let a = Ipv4Addr::from(base + off);
        (!taken.contains(&a.to_string())).then_some(a)
    };
    for _ in 0..64 {
        if let Some(a) = valid(rng.random_range(lower..=upper)) {
            return Some(a);
        }
    }
    (1..=upper).find_map(valid)
}

fn node_ports_taken(inner: &Inner, ns: &str, name: &str) -> HashSet<i64> {
    services(inner)
        .filter(|s| !(meta::namespace(s) == ns && meta::name(s) == name))
        .flat_map(|s| {
            s.pointer("/spec/ports")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|p| p.get("nodePort").and_then(Value::as_i64))
        .collect()
}

fn workload(res: &ResourceInfo, name: &str, obj: &mut Value, old: Option<&Value>) -> ApiResult<()> {
    let mut errs = Vec::new();
    let spec = meta::obj_at_mut(obj, &["spec"])
        .ok_or_else(|| ApiError::bad_request("spec must be an object"))?;
    spec.entry("replicas").or_insert(json!(1));
    spec.entry("revisionHistoryLimit").or_insert(json!(10));
    match res.kind {
        "Deployment" => {
            spec.entry("progressDeadlineSeconds").or_insert(json!(600));
            let strategy = spec.entry("strategy").or_insert(json!({}));
            if let Some(s) = strategy.as_object_mut() {
                let ty = s.entry("type").or_insert(json!("RollingUpdate")).clone();
                if ty == "RollingUpdate" {
                    s.entry("rollingUpdate")
                        .or_insert(json!({"maxSurge": "25%", "maxUnavailable": "25%"}));
                }
            }
        }
        "StatefulSet" => {
            spec.entry("podManagementPolicy")
                .or_insert(json!("OrderedReady"));
            spec.entry("updateStrategy")
                .or_insert(json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}));
            spec.entry("persistentVolumeClaimRetentionPolicy")
                .or_insert(json!({"whenDeleted": "Retain", "whenScaled": "Retain"}));
        }
        _ => {}
    }
    if let Some(ps) = spec.get_mut("template").and_then(|t| t.get_mut("spec")) {
        default_pod_spec(ps);
    }
    let spec = Value::Object(spec.clone());
    if spec.get("replicas").and_then(Value::as_i64).unwrap_or(0) < 0 {
        errs.push(FieldError::invalid(
            "spec.replicas",
            spec["replicas"].to_string(),
            "must be greater than or equal to 0",
        ));
    }
    let selector = spec.get("selector").cloned().unwrap_or(Value::Null);
    let sel_empty = selector.is_null()
        || selector.as_object().is_some_and(|m| {
            m.get("matchLabels")
                .and_then(Value::as_object)
                .is_none_or(Map::is_empty)
                && m.get("matchExpressions")
                    .and_then(Value::as_array)
                    .is_none_or(Vec::is_empty)
        });
    if sel_empty {
        errs.push(FieldError::required("spec.selector", ""));
    } else {
        match LabelSelector::from_json(&selector) {
            Err(e) => errs.push(FieldError::invalid("spec.selector", "", e.to_string())),
            Ok(sel) => {
                let labels = spec
                    .pointer("/template/metadata/labels")
                    .cloned()
                    .unwrap_or(json!({}));
                let probe = json!({"metadata": {"labels": labels}});
                if !sel.matches_object(&probe) {
                    errs.push(FieldError::invalid(
                        "spec.template.metadata.labels",
                        format!("map[string]string{}", labels),
                        "`selector` does not match template `labels`",
                    ));
                }
            }
        }
    }
    if let Some(old) = old
        && old.pointer("/spec/selector") != spec.get("selector")
    {
        errs.push(FieldError::invalid(
            "spec.selector",
            "",
            "field is immutable",
        ));
    }
    validate_pod_spec(
        spec.pointer("/template/spec").unwrap_or(&Value::Null),
        "spec.template.spec",
        &mut errs,
    );
    finish(res, name, errs)
}

/// Labels the API server puts on a Job's pod template (and the selector it generates).
pub(crate) const JOB_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
/// The Job name label on a Job's pod template.
pub(crate) const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";

/// batch/v1 Job: defaults, the generated selector and template labels (unless
/// `manualSelector`), restart policy, bounds, and immutable selector and template.
fn job(res: &ResourceInfo, name: &str, obj: &mut Value, old: Option<&Value>) -> ApiResult<()> {
    let uid = meta::uid(obj).to_string();
    let mut errs = Vec::new();
    let spec = meta::obj_at_mut(obj, &["spec"])
        .ok_or_else(|| ApiError::bad_request("spec must be an object"))?;
    let set = |spec: &Map<String, Value>, k: &str| spec.get(k).is_some_and(|v| !v.is_null());
    if !set(spec, "completions") && !set(spec, "parallelism") {
        spec.insert("completions".into(), json!(1));
    }
    if !set(spec, "parallelism") {
        spec.insert("parallelism".into(), json!(1));
    }
    if !set(spec, "backoffLimit") {
        spec.insert("backoffLimit".into(), json!(6));
    }
    spec.entry("completionMode").or_insert(json!("NonIndexed"));
    spec.entry("suspend").or_insert(json!(false));
    spec.entry("podReplacementPolicy")
        .or_insert(json!("TerminatingOrFailed"));
    let manual = spec.get("manualSelector").and_then(Value::as_bool) == Some(true);
    if let Some(ps) = spec.get_mut("template").and_then(|t| t.get_mut("spec")) {
        default_pod_spec(ps);
    }
    if old.is_none() && !manual {
        if spec.get("selector").is_some_and(|s| !s.is_null()) {
            errs.push(FieldError::invalid(
                "spec.selector",
                "",
                "`selector` not auto-generated",
            ));
        } else {
            spec.insert(
                "selector".into(),
                json!({"matchLabels": {JOB_UID_LABEL: uid}}),
            );
            let template = spec.entry("template").or_insert(json!({}));
            if !template.is_object() {
                *template = json!({});
            }
            let labels = template
                .as_object_mut()
                .map(|t| t.entry("metadata").or_insert(json!({})))
                .and_then(Value::as_object_mut)
                .map(|m| m.entry("labels").or_insert(json!({})))
                .and_then(Value::as_object_mut);
            if let Some(labels) = labels {
                labels.insert(JOB_UID_LABEL.into(), json!(uid));
                labels.insert(JOB_NAME_LABEL.into(), json!(name));
                labels.insert("controller-uid".into(), json!(uid));
                labels.insert("job-name".into(), json!(name));
            }
        }
    }
    let spec = Value::Object(spec.clone());
    for (field, min) in [
        ("parallelism", 0),
        ("completions", 0),
        ("backoffLimit", 0),
        ("ttlSecondsAfterFinished", 0),
        ("activeDeadlineSeconds", 1),
    ] {
        match spec.get(field) {
            None | Some(Value::Null) => {}
            Some(v) if v.as_i64().is_some_and(|n| n >= min) => {}
            Some(v) => errs.push(FieldError::invalid(
                format!("spec.{field}"),
                v.to_string(),
                if min == 0 {
                    "must be greater than or equal to 0"
                } else {
                    "must be greater than 0"
                },
            )),
        }
    }
    if spec.get("template").is_none_or(Value::is_null) {
        errs.push(FieldError::required("spec.template", ""));
    }
    validate_pod_spec(
        spec.pointer("/template/spec").unwrap_or(&Value::Null),
        "spec.template.spec",
        &mut errs,
    );
    let rp = meta::str_at(&spec, &["template", "spec", "restartPolicy"]);
    if !["OnFailure", "Never"].contains(&rp) {
        errs.push(FieldError::not_supported(
            "spec.template.spec.restartPolicy",
            rp,
            &["OnFailure", "Never"],
        ));
    }
    if manual {
        match LabelSelector::from_json(spec.get("selector").unwrap_or(&Value::Null)) {
            Ok(sel) if !sel.is_empty() => {
                let labels = spec
                    .pointer("/template/metadata/labels")
                    .cloned()
                    .unwrap_or(json!({}));
                if !sel.matches_object(&json!({"metadata": {"labels": labels}})) {
                    errs.push(FieldError::invalid(
                        "spec.template.metadata.labels",
                        format!("map[string]string{labels}"),
                        "`selector` does not match template `labels`",
                    ));
                }
            }
            Ok(_) => errs.push(FieldError::required("spec.selector", "")),
            Err(e) => errs.push(FieldError::invalid("spec.selector", "", e.to_string())),
        }
    }
    if let Some(old) = old {
        for field in ["selector", "template", "completions", "completionMode"] {
            if old.pointer(&format!("/spec/{field}")) != spec.get(field) {
                errs.push(FieldError::invalid(
                    format!("spec.{field}"),
                    "",
                    "field is immutable",
                ));
            }
        }
    }
    finish(res, name, errs)
}

fn secret(res: &ResourceInfo, name: &str, obj: &mut Value) -> ApiResult<()> {
    let mut errs = Vec::new();
    let Some(o) = obj.as_object_mut() else {
        return Ok(());
    };
    o.entry("type").or_insert(json!("Opaque"));
    if let Some(Value::Object(sd)) = o.remove("stringData") {
        let data = o.entry("data").or_insert(json!({}));
        if let Some(d) = data.as_object_mut() {
            for (k, v) in sd {
                let text = v.as_str().unwrap_or("").to_string();
                d.insert(
                    k,
                    json!(base64::engine::general_purpose::STANDARD.encode(text)),
                );
            }
        }
    }
    if let Some(d) = o.get("data").and_then(Value::as_object) {
        for (k, v) in d {
            let ok = v
                .as_str()
                .is_some_and(|s| base64::engine::general_purpose::STANDARD.decode(s).is_ok());
            if !ok {
                errs.push(FieldError::invalid(
                    format!("data[{k}]"),
                    "",
                    "must be base64 encoded",
                ));
            }
        }
    }
    finish(res, name, errs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;
    use crate::store::{ClusterConfig, Store, Sub};
    use std::sync::Arc;

    fn store() -> Arc<Store> {
        let s = Store::new(ClusterConfig {
            service_cidr: "172.17.16.0/20".parse().unwrap(),
            node_port_range: (30000, 32767),
            cluster_domain: "cluster.local".into(),
        });
        s.create(
            find("", "v1", "namespaces").unwrap(),
            "",
            json!({"metadata": {"name": "default"}}),
            false,
        )
        .unwrap();
        s
    }

    fn svc(name: &str, ip: Option<&str>) -> Value {
        let mut v = json!({"metadata": {"name": name}, "spec": {"ports": [{"port": 80}], "selector": {"app": name}}});
        if let Some(ip) = ip {
            v["spec"]["clusterIP"] = json!(ip);
        }
        v
    }

    #[test]
    fn service_ip_allocation_and_errors() {
        let s = store();
        let r = find("", "v1", "services").unwrap();
        let a = s.create(r, "default", svc("a", None), false).unwrap();
        let ip: Ipv4Addr = a["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
        assert!(
            "172.17.16.0/20"
                .parse::<ipnet::Ipv4Net>()
                .unwrap()
                .contains(&ip)
        );
        assert_eq!(a["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(a["spec"]["ports"][0]["protocol"], "TCP");
        s.create(r, "default", svc("dns", Some("172.17.16.10")), false)
            .unwrap();
        let e = s
            .create(r, "default", svc("b", Some("172.17.16.10")), false)
            .unwrap_err();
        assert_eq!(e.code, 422);
        assert!(
            e.message.contains("provided IP is already allocated"),
            "{}",
            e.message
        );
        let e = s
            .create(r, "default", svc("c", Some("1.1.1.1")), false)
            .unwrap_err();
        assert!(
            e.message
                .contains("The range of valid IPs is 172.17.16.0/20"),
            "{}",
            e.message
        );
        let mut changed = s.get(r, "default", "dns").unwrap();
        changed["spec"]["clusterIP"] = json!("172.17.16.11");
        changed["spec"]["clusterIPs"] = json!(["172.17.16.11"]);
        assert_eq!(
            s.update(r, "default", "dns", changed, Sub::Main, false)
                .unwrap_err()
                .code,
            422
        );
        let h = s
            .create(r, "default", svc("h", Some("None")), false)
            .unwrap();
        assert_eq!(h["spec"]["clusterIPs"], json!(["None"]));
    }

    /// The answers discovery's out-of-range ClusterIP probe reads, worded as kube-apiserver
    /// words them (pkg/registry/core/service/storage/alloc.go wrapping ipallocator's
    /// ErrNotInRange; initIPFamilyFields for an unconfigured family); a dry run stores
    /// nothing.
    #[test]
    fn out_of_range_cluster_ips_are_refused_like_kube_apiserver() {
        let s = store();
        let r = find("", "v1", "services").unwrap();
        let e = s
            .create(r, "default", svc("probe", Some("0.0.0.1")), true)
            .unwrap_err();
        assert_eq!((e.code, e.reason), (422, "Invalid"));
        assert_eq!(
            e.message,
            "Service \"probe\" is invalid: spec.clusterIPs: Invalid value: []string{\"0.0.0.1\"}: failed to allocate IP 0.0.0.1: the provided IP (0.0.0.1) is not in the valid range. The range of valid IPs is 172.17.16.0/20"
        );
        let e = s
            .create(r, "default", svc("probe", Some("100::1")), true)
            .unwrap_err();
        assert_eq!(
            e.message,
            "Service \"probe\" is invalid: spec.clusterIPs[0]: Invalid value: []string{\"100::1\"}: IPv6 is not configured on this cluster"
        );
        // A valid dry run answers with the object but stores nothing.
        s.create(r, "default", svc("probe", Some("172.17.16.50")), true)
            .unwrap();
        assert!(s.get(r, "default", "probe").is_err());
        s.create(r, "default", svc("real", Some("172.17.16.50")), false)
            .unwrap();
    }

    #[test]
    fn node_ports() {
        let s = store();
        let r = find("", "v1", "services").unwrap();
        let mut v = svc("np", None);
        v["spec"]["type"] = json!("NodePort");
        let out = s.create(r, "default", v, false).unwrap();
        let np = out["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
        assert!((30000..=32767).contains(&np));
        let mut again = svc("np2", None);
        again["spec"]["type"] = json!("NodePort");
        again["spec"]["ports"][0]["nodePort"] = json!(np);
        assert_eq!(s.create(r, "default", again, false).unwrap_err().code, 422);
    }

    #[test]
    fn deployment_selector_must_match() {
        let s = store();
        let r = find("apps", "v1", "deployments").unwrap();
        let d = json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"app": "x"}},
            "template": {"metadata": {"labels": {"app": "y"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let e = s.create(r, "default", d, false).unwrap_err();
        assert!(
            e.message
                .contains("`selector` does not match template `labels`"),
            "{}",
            e.message
        );
    }

    #[test]
    fn pod_defaults_and_immutability() {
        let s = store();
        let r = find("", "v1", "pods").unwrap();
        let p = s
            .create(r, "default", json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}), false)
            .unwrap();
        assert_eq!(p["spec"]["restartPolicy"], "Always");
        assert_eq!(p["spec"]["serviceAccountName"], "default");
        assert_eq!(p["status"]["phase"], "Pending");
        let mut bound = p.clone();
        bound["spec"]["nodeName"] = json!("node1");
        let bound = s
            .update(r, "default", "p", bound, Sub::Main, false)
            .unwrap();
        let mut bad = bound.clone();
        bad["spec"]["restartPolicy"] = json!("Never");
        assert_eq!(
            s.update(r, "default", "p", bad, Sub::Main, false)
                .unwrap_err()
                .code,
            422
        );
        let e = s
            .create(
                r,
                "default",
                json!({"metadata": {"name": "q"}, "spec": {"containers": [{"name": "c"}]}}),
                false,
            )
            .unwrap_err();
        assert!(
            e.message
                .contains("spec.containers[0].image: Required value"),
            "{}",
            e.message
        );
    }

    #[test]
    fn secret_string_data() {
        let s = store();
        let r = find("", "v1", "secrets").unwrap();
        let out = s
            .create(
                r,
                "default",
                json!({"metadata": {"name": "s"}, "stringData": {"k": "v"}}),
                false,
            )
            .unwrap();
        assert_eq!(out["data"]["k"], "dg==");
        assert_eq!(out["type"], "Opaque");
        assert!(out.get("stringData").is_none());
    }
}
