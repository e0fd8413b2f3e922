//! Pure parsers for what discovery reads: the API server's out-of-range ClusterIP error,
//! kube-apiserver command lines, Flannel's `net-conf.json`, Calico IPPools and ServiceCIDR
//! objects. No I/O; every function takes what the API returned.

use ipnet::IpNet;
use serde_json::Value;

/// What kube-apiserver says after "the provided IP (x) is not in the valid range." since
/// Kubernetes 1.8 (`pkg/registry/core/service/ipallocator`, `ErrNotInRange`).
const VALID_RANGE_MARKER: &str = "the range of valid ips is";

/// The flag that sets the Service range on kube-apiserver.
const SERVICE_RANGE_FLAG: &str = "--service-cluster-ip-range";

/// The ranges named in an API server's answer to a Service with an out-of-range ClusterIP,
/// e.g. `Service "x" is invalid: spec.clusterIPs: Invalid value: []string{"0.0.0.1"}:
/// failed to allocate IP 0.0.0.1: the provided IP (0.0.0.1) is not in the valid range. The
/// range of valid IPs is 10.96.0.0/12`. Every occurrence is read (dual-stack errors may name
/// two), a comma-separated list after the marker too; duplicates are dropped.
pub(crate) fn valid_ranges_in_message(message: &str) -> Vec<IpNet> {
    let lower = message.to_ascii_lowercase();
    let mut out: Vec<IpNet> = Vec::new();
    let mut from = 0;
    while let Some(pos) = lower[from..].find(VALID_RANGE_MARKER) {
        let start = from + pos + VALID_RANGE_MARKER.len();
        let rest = message[start..].trim_start();
        let token: String = rest
            .chars()
            .take_while(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '/' | ','))
            .collect();
        for part in token.split(',') {
            let part = part.trim_end_matches('.');
            if let Ok(net) = part.parse::<IpNet>() {
                let net = net.trunc();
                if !out.contains(&net) {
                    out.push(net);
                }
            }
        }
        from = start;
    }
    out
}

/// Why a rejection of the probe named no range, for the notes.
pub(crate) fn probe_rejection_reason(message: &str) -> &'static str {
    let lower = message.to_ascii_lowercase();
    if lower.contains("does not match the current range") {
        // The multi-CIDR allocator (ServiceCIDR objects) outside a dry run.
        "the API server does not name its range (\"the provided network does not match the current range\")"
    } else if lower.contains("not in the valid range") {
        "the API server does not name its range in the error"
    } else if lower.contains("not configured on this cluster") {
        "this IP family is not configured on the cluster"
    } else {
        "the API server's answer names no range"
    }
}

/// The values of `--service-cluster-ip-range` on a kube-apiserver command line (`command`
/// followed by `args`), in either `--flag=value` or `--flag value` form, also inside a
/// shell wrapper such as `sh -c "kube-apiserver ..."`. `None` when the flag is absent;
/// unparsable entries are skipped.
pub(crate) fn service_range_flag(command_line: &[String]) -> Option<Vec<IpNet>> {
    let words: Vec<&str> = command_line
        .iter()
        .flat_map(|a| a.split_whitespace())
        .map(|w| w.trim_matches(|c| c == '"' || c == '\''))
        .collect();
    let mut value = None;
    for (i, w) in words.iter().enumerate() {
        if let Some(v) = w.strip_prefix(SERVICE_RANGE_FLAG) {
            if let Some(v) = v.strip_prefix('=') {
                value = Some(v.to_string());
            } else if v.is_empty() {
                value = words.get(i + 1).map(|v| v.to_string());
            }
        }
    }
    // Like any Go flag set, the last occurrence wins.
    let value = value?;
    Some(
        value
            .split(',')
            .map(|c| c.trim().trim_matches(|c| c == '"' || c == '\''))
            .filter_map(|c| c.parse::<IpNet>().ok())
            .map(|n| n.trunc())
            .collect(),
    )
}

/// The pod networks in Flannel's `net-conf.json`: `Network` (IPv4, unless
/// `EnableIPv4: false`) and `IPv6Network` (with `EnableIPv6: true`).
///
/// # Errors
/// A description of what is wrong with the document, for the notes.
pub(crate) fn flannel_networks(net_conf: &str) -> Result<Vec<IpNet>, String> {
    let v: Value = serde_json::from_str(net_conf)
        .map_err(|e| format!("net-conf.json is not valid JSON: {e}"))?;
    let mut out = Vec::new();
    for (key, enable, default_on) in [
        ("Network", "EnableIPv4", true),
        ("IPv6Network", "EnableIPv6", false),
    ] {
        // IPv4 is on unless `EnableIPv4: false`; IPv6 only with `EnableIPv6: true`.
        let enabled = v.get(enable).and_then(Value::as_bool).unwrap_or(default_on);
        let Some(s) = v.get(key).and_then(Value::as_str) else {
            continue;
        };
        if !enabled {
            continue;
        }
        let net = s
            .parse::<IpNet>()
            .map_err(|_| format!("net-conf.json {key} {s:?} is not a CIDR"))?;
        out.push(net.trunc());
    }
    if out.is_empty() {
        return Err("net-conf.json has no Network".into());
    }
    Ok(out)
}

/// A Calico IPPool's CIDR, unless the pool is disabled (`spec.disabled: true`): pools that
/// hand out no addresses are not routed. `Err` describes a malformed pool.
pub(crate) fn calico_pool_cidr(pool: &Value) -> Result<Option<IpNet>, String> {
    let spec = pool.get("spec");
    if spec
        .and_then(|s| s.get("disabled"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        return Ok(None);
    }
    let cidr = spec
        .and_then(|s| s.get("cidr"))
        .and_then(Value::as_str)
        .ok_or_else(|| "has no spec.cidr".to_string())?;
    cidr.parse::<IpNet>()
        .map(|n| Some(n.trunc()))
        .map_err(|_| format!("spec.cidr {cidr:?} is not a CIDR"))
}

/// The CIDRs of a ServiceCIDR object's `spec.cidrs` (as JSON, for v1 and v1beta1 alike);
/// the strings that do not parse come back apart, for the notes.
pub(crate) fn service_cidr_spec(obj: &Value) -> (Vec<IpNet>, Vec<String>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for c in obj
        .pointer("/spec/cidrs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match c.as_str().map(str::parse::<IpNet>) {
            Some(Ok(n)) => good.push(n.trunc()),
            _ => bad.push(c.to_string()),
        }
    }
    (good, bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ns(v: &[IpNet]) -> Vec<String> {
        v.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn probe_answers_of_real_api_servers() {
        // Kubernetes 1.20 and later (storage/alloc.go wraps ipallocator.ErrNotInRange).
        let current = "Service \"kubelan-cidr-probe\" is invalid: spec.clusterIPs: Invalid value: []string{\"0.0.0.1\"}: failed to allocate IP 0.0.0.1: the provided IP (0.0.0.1) is not in the valid range. The range of valid IPs is 10.96.0.0/12";
        assert_eq!(ns(&valid_ranges_in_message(current)), ["10.96.0.0/12"]);
        // 1.8 to 1.19: `spec.clusterIP`, a quoted string value, no IP in the detail.
        let old = "Service \"x\" is invalid: spec.clusterIP: Invalid value: \"0.0.0.1\": provided IP is not in the valid range. The range of valid IPs is 10.0.0.0/24.";
        assert_eq!(ns(&valid_ranges_in_message(old)), ["10.0.0.0/24"]);
        // IPv6, and two causes in one aggregated message.
        let two = "Service \"x\" is invalid: [spec.clusterIPs: Invalid value: []string{\"100::1\"}: failed to allocate IP 100::1: the provided IP (100::1) is not in the valid range. The range of valid IPs is fd00:10:96::/108, spec.clusterIPs: Invalid value: ...: The range of valid IPs is 10.96.0.0/12]";
        assert_eq!(
            ns(&valid_ranges_in_message(two)),
            ["fd00:10:96::/108", "10.96.0.0/12"]
        );
        // The multi-CIDR allocator outside a dry run, and a server that hides the range.
        let eks = "Service \"x\" is invalid: spec.clusterIPs: Invalid value: []string{\"0.0.0.0\"}: failed to allocate IP 0.0.0.0: the provided network does not match the current range";
        assert!(valid_ranges_in_message(eks).is_empty());
        assert!(probe_rejection_reason(eks).contains("does not match the current range"));
        let hidden = "Service \"x\" is invalid: spec.clusterIPs: Invalid value: []string{\"0.0.0.1\"}: failed to allocate IP 0.0.0.1: the provided IP (0.0.0.1) is not in the valid range";
        assert!(valid_ranges_in_message(hidden).is_empty());
        assert_eq!(
            probe_rejection_reason(hidden),
            "the API server does not name its range in the error"
        );
        let v6 = "Service \"x\" is invalid: spec.clusterIPs[0]: Invalid value: []string{\"100::1\"}: IPv6 is not configured on this cluster";
        assert!(valid_ranges_in_message(v6).is_empty());
        assert!(probe_rejection_reason(v6).contains("not configured"));
        // Garbage after the marker.
        assert!(valid_ranges_in_message("The range of valid IPs is unknown").is_empty());
        assert_eq!(
            ns(&valid_ranges_in_message(
                "the range of valid IPs is 10.96.0.0/12,fd00::/108."
            )),
            ["10.96.0.0/12", "fd00::/108"]
        );
    }

    #[test]
    fn api_server_flag_forms() {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let kubeadm = v(&[
            "kube-apiserver",
            "--advertise-address=10.4.7.11",
            "--service-cluster-ip-range=10.96.0.0/12,fd00:10:96::/108",
            "--tls-cert-file=/etc/kubernetes/pki/apiserver.crt",
        ]);
        assert_eq!(
            ns(&service_range_flag(&kubeadm).unwrap()),
            ["10.96.0.0/12", "fd00:10:96::/108"]
        );
        let spaced = v(&[
            "kube-apiserver",
            "--service-cluster-ip-range",
            "10.43.0.0/16",
        ]);
        assert_eq!(ns(&service_range_flag(&spaced).unwrap()), ["10.43.0.0/16"]);
        let shell = v(&[
            "/bin/sh",
            "-c",
            "exec kube-apiserver --secure-port=6443 --service-cluster-ip-range='10.32.0.0/24' --v=2",
        ]);
        assert_eq!(ns(&service_range_flag(&shell).unwrap()), ["10.32.0.0/24"]);
        // The last occurrence wins; a look-alike flag does not count.
        let twice = v(&[
            "--service-cluster-ip-range=10.0.0.0/24",
            "--service-cluster-ip-range=10.1.0.0/24",
            "--service-cluster-ip-range-extra=1.2.3.0/24",
        ]);
        assert_eq!(ns(&service_range_flag(&twice).unwrap()), ["10.1.0.0/24"]);
        assert!(service_range_flag(&v(&["kube-apiserver", "--v=2"])).is_none());
    }

    #[test]
    fn flannel_net_conf() {
        let lab =
            "{\n  \"Network\": \"172.17.32.0/19\",\n  \"Backend\": {\"Type\": \"host-gw\"}\n}";
        assert_eq!(ns(&flannel_networks(lab).unwrap()), ["172.17.32.0/19"]);
        let dual = r#"{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56", "Backend": {"Type": "vxlan"}}"#;
        assert_eq!(
            ns(&flannel_networks(dual).unwrap()),
            ["10.244.0.0/16", "fd00:10:244::/56"]
        );
        let v6_only = r#"{"EnableIPv4": false, "Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00::/56"}"#;
        assert_eq!(ns(&flannel_networks(v6_only).unwrap()), ["fd00::/56"]);
        assert!(
            flannel_networks("{")
                .unwrap_err()
                .contains("not valid JSON")
        );
        assert!(
            flannel_networks(r#"{"Network": "ten"}"#)
                .unwrap_err()
                .contains("not a CIDR")
        );
        assert!(flannel_networks("{}").unwrap_err().contains("no Network"));
    }

    #[test]
    fn calico_pools() {
        let pool = json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
            "metadata": {"name": "default-ipv4-ippool"},
            "spec": {"cidr": "192.168.0.0/16", "ipipMode": "Always", "natOutgoing": true}});
        assert_eq!(
            calico_pool_cidr(&pool).unwrap(),
            Some("192.168.0.0/16".parse().unwrap())
        );
        let disabled = json!({"spec": {"cidr": "10.0.0.0/16", "disabled": true}});
        assert_eq!(calico_pool_cidr(&disabled).unwrap(), None);
        assert!(calico_pool_cidr(&json!({"spec": {}})).is_err());
        assert!(calico_pool_cidr(&json!({"spec": {"cidr": "x"}})).is_err());
    }

    #[test]
    fn service_cidr_objects() {
        let o = json!({"spec": {"cidrs": ["10.96.0.0/12", "fd00:10:96::/108", "bogus", 7]}});
        let (good, bad) = service_cidr_spec(&o);
        assert_eq!(ns(&good), ["10.96.0.0/12", "fd00:10:96::/108"]);
        assert_eq!(bad, ["\"bogus\"", "7"]);
        assert_eq!(service_cidr_spec(&json!({})), (vec![], vec![]));
    }
}
