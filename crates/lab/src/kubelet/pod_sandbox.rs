//! A pod's sandbox: its network namespace and address, the in-cluster files
//! (`/etc/resolv.conf`, `/etc/hosts`, the service-account token), volumes and the holder.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, bail};
use kubelan_apisim::meta;
use kubelan_sys::Bind;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::netops;
use crate::sandbox::{self, Holder, Kind, SandboxSpec};

use super::node::PodWorker;
use super::pod_run::PodRun;
use super::res;
use super::volumes::{prepare_volumes, redirect_var_run, set_mode};

impl PodWorker {
    pub(super) async fn create_sandbox(&self) -> anyhow::Result<(PodRun, Holder, Option<String>)> {
        let ctx = &self.agent.ctx;
        let node = &self.agent.node;
        let cfg = &ctx.record.config;
        let pod = &self.pod;
        let ns = meta::namespace(pod).to_string();
        let name = meta::name(pod).to_string();
        let uid = meta::uid(pod).to_string();
        let dir = ctx.paths.pod_dir(&uid);
        std::fs::create_dir_all(&dir)?;
        let node_netns = netops::ns_path(&node.netns);
        let mtu = cfg.network.mtu;
        let (ip, netns, veth) = if self.host_network() {
            (node.address, node_netns.clone(), None)
        } else {
            let ip = self
                .agent
                .ipam
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .allocate()
                .with_context(|| {
                    format!(
                        "no free address in node {}'s Pod CIDR {}",
                        node.name, node.pod_cidr
                    )
                })?;
            let gw = Ipv4Addr::from(u32::from(node.pod_cidr.network()) + 1);
            let nsname = self.pod_netns_name(&uid);
            let veth = format!("veth{}", &uid[..8.min(uid.len())]);
            ctx.journal_netns(&nsname)?;
            let setup = async {
                netops::netns_add(&nsname).await?;
                netops::ip_batch(
                    &node.netns,
                    &[
                        format!(
                            "link add {veth} mtu {mtu} type veth peer name eth0 netns {nsname}"
                        ),
                        format!("link set {veth} master cni0 up"),
                        // With br_netfilter, DNAT back to the sending pod is bridged out
                        // of the port it came in on (as the CNI bridge plugin's hairpinMode).
                        format!("link set {veth} type bridge_slave hairpin on"),
                    ],
                )
                .await?;
                netops::ip_batch(
                    &nsname,
                    &[
                        "link set lo up".into(),
                        format!("link set eth0 mtu {mtu} up"),
                        format!("addr add {ip}/32 dev eth0"),
                        format!("route add {gw}/32 dev eth0 scope link"),
                        format!("route add default via {gw} dev eth0 src {ip}"),
                    ],
                )
                .await?;
                // Unprivileged ICMP echo sockets for every group, as containerd 2.x and
                // Docker set up pod sandboxes (the agent pings with one).
                let mut settings = vec![(
                    "net/ipv4/ping_group_range".to_string(),
                    "0 2147483647".to_string(),
                )];
                // The pod's own safe sysctls after the runtime's defaults, as the kubelet
                // applies `securityContext.sysctls` (e.g. a `kubelan replace` relay that
                // listens on a Service's targetPort below 1024).
                settings.extend(pod_sysctls(pod));
                let settings: Vec<(&str, &str)> = settings
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                netops::sysctls(&netops::ns_path(&nsname), &settings).await
            };
            if let Err(e) = setup.await {
                self.agent
                    .ipam
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .release(ip);
                let _ = netops::netns_del(&nsname).await;
                return Err(e);
            }
            (ip, netops::ns_path(&nsname), Some(veth))
        };
        // Files of the sandbox.
        let spec = pod.get("spec").cloned().unwrap_or(json!({}));
        let hostname = {
            let h = meta::str_at(&spec, &["hostname"]);
            let h = if h.is_empty() { name.as_str() } else { h };
            h.chars().take(63).collect::<String>()
        };
        let subdomain = meta::str_at(&spec, &["subdomain"]);
        let domain = &cfg.cluster.domain;
        let mut names = Vec::new();
        if !subdomain.is_empty() {
            names.push(format!("{hostname}.{subdomain}.{ns}.svc.{domain}"));
        }
        names.push(hostname.clone());
        let mut hosts = sandbox::hosts_file(&hostname, Some(&ip.to_string()), &names);
        if let Some(aliases) = spec.get("hostAliases").and_then(Value::as_array) {
            hosts.push_str("\n# Entries added by HostAliases.\n");
            for a in aliases {
                let names: Vec<&str> = a
                    .get("hostnames")
                    .and_then(Value::as_array)
                    .map(|v| v.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                hosts.push_str(&format!(
                    "{}\t{}\n",
                    meta::str_at(a, &["ip"]),
                    names.join("\t")
                ));
            }
        }
        let resolv = resolv_conf(&spec, &ns, cfg);
        let mut binds = Vec::new();
        let mut mkdirs = Vec::new();
        // Service-account files.
        let sa_name = meta::str_at(&spec, &["serviceAccountName"]).to_string();
        let sa_name = if sa_name.is_empty() {
            "default".to_string()
        } else {
            sa_name
        };
        let sa_obj = ctx
            .store
            .get(res("", "serviceaccounts"), &ns, &sa_name)
            .ok();
        let automount = spec
            .get("automountServiceAccountToken")
            .and_then(Value::as_bool)
            .or_else(|| {
                sa_obj
                    .as_ref()
                    .and_then(|s| s.get("automountServiceAccountToken"))
                    .and_then(Value::as_bool)
            })
            .unwrap_or(true);
        if automount {
            if sa_obj.is_none() {
                bail!(
                    "error looking up service account {ns}/{sa_name}: serviceaccount \"{sa_name}\" not found"
                );
            }
            let sa_dir = dir.join("serviceaccount");
            std::fs::create_dir_all(&sa_dir)?;
            let token = ctx
                .auth
                .mint_service_account_token(&ns, &sa_name, Some((&name, &uid)));
            std::fs::write(sa_dir.join("token"), token)?;
            std::fs::write(sa_dir.join("ca.crt"), &ctx.ca_pem)?;
            std::fs::write(sa_dir.join("namespace"), &ns)?;
            set_mode(&sa_dir, 0o755);
            for f in ["token", "ca.crt", "namespace"] {
                set_mode(&sa_dir.join(f), 0o644);
            }
            mkdirs.push(PathBuf::from("/run/secrets/kubernetes.io"));
            binds.push(Bind {
                source: sa_dir,
                target: PathBuf::from("/run/secrets/kubernetes.io/serviceaccount"),
                readonly: true,
            });
        }
        // Volumes.
        let vol_binds = prepare_volumes(ctx, pod, &dir, ip, node.address)?;
        for (target, b) in vol_binds {
            if let Some(parent) = target.parent()
                && parent != Path::new("/")
            {
                mkdirs.push(redirect_var_run(parent));
            }
            binds.push(b);
        }
        let holder = sandbox::start(&SandboxSpec {
            netns: netns.clone(),
            hostname: hostname.clone(),
            dir: dir.clone(),
            kind: Kind::Pod,
            etc_files: vec![
                ("resolv.conf".into(), resolv),
                ("hosts".into(), hosts),
                ("hostname".into(), format!("{hostname}\n")),
            ],
            kubelan_binary: ctx.record.kubelan_binary.clone(),
            binds,
            mkdirs,
        })
        .await?;
        ctx.journal_process(holder.pid, &format!("holder:pod:{ns}/{name}"));
        std::fs::write(dir.join("holder.pid"), holder.pid.to_string())?;
        let holder_ns = holder.namespaces()?;
        let run = PodRun {
            ctx: ctx.clone(),
            uid,
            ns,
            name,
            pod: pod.clone(),
            dir,
            netns,
            node_netns,
            ip,
            holder_ns,
            statuses: Mutex::new(Vec::new()),
            changed: Notify::new(),
            start_time: meta::now_rfc3339(),
            host_ip: node.address,
        };
        Ok((run, holder, veth))
    }
}

fn resolv_conf(spec: &Value, ns: &str, cfg: &crate::config::LabConfig) -> String {
    let policy = meta::str_at(spec, &["dnsPolicy"]);
    let host_net = spec
        .get("hostNetwork")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let domain = &cfg.cluster.domain;
    let dns_ip = cfg.cluster.dns_service_ip();
    let cluster_first = match policy {
        "None" | "Default" => false,
        "ClusterFirstWithHostNet" => true,
        _ => !host_net,
    };
    let (mut servers, mut searches, mut options) = if cluster_first {
        (
            vec![dns_ip.to_string()],
            vec![
                format!("{ns}.svc.{domain}"),
                format!("svc.{domain}"),
                domain.to_string(),
            ],
            vec!["ndots:5".to_string()],
        )
    } else if policy == "None" {
        (vec![], vec![], vec![])
    } else {
        // The node's resolver: lab nodes use the cluster DNS.
        (vec![dns_ip.to_string()], vec![], vec![])
    };
    if let Some(dc) = spec.get("dnsConfig") {
        let strings = |key: &str| -> Vec<String> {
            dc.get(key)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        };
        servers.extend(strings("nameservers"));
        searches.extend(strings("searches"));
        for o in dc
            .get("options")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let n = meta::str_at(o, &["name"]);
            let v = meta::str_at(o, &["value"]);
            options.retain(|x| x.split(':').next() != Some(n));
            options.push(if v.is_empty() {
                n.to_string()
            } else {
                format!("{n}:{v}")
            });
        }
    }
    let mut out = String::new();
    if !searches.is_empty() {
        out.push_str(&format!("search {}\n", searches.join(" ")));
    }
    for s in servers.iter().take(3) {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

/// The network-namespaced sysctls Kubernetes calls safe (allowed by Pod Security
/// `baseline` and `restricted`, enabled in every kubelet).
const SAFE_NET_SYSCTLS: [&str; 9] = [
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// The pod's `spec.securityContext.sysctls` that the lab applies in its network namespace,
/// as `/proc/sys` paths: only [`SAFE_NET_SYSCTLS`] (others are ignored; the lab enables no
/// unsafe ones), values of printable ASCII without `/`.
fn pod_sysctls(pod: &Value) -> Vec<(String, String)> {
    pod.pointer("/spec/securityContext/sysctls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| {
            let name = s.get("name")?.as_str()?;
            let value = s.get("value")?.as_str()?;
            let ok = SAFE_NET_SYSCTLS.contains(&name)
                && !value.is_empty()
                && value.len() <= 64
                && value
                    .bytes()
                    .all(|b| (b' '..=b'~').contains(&b) && b != b'/');
            ok.then(|| (name.replace('.', "/"), value.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_safe_pod_sysctls_are_applied() {
        let pod = serde_json::json!({"spec": {"securityContext": {"sysctls": [
            {"name": "net.ipv4.ip_unprivileged_port_start", "value": "80"},
            {"name": "net.ipv4.ip_forward", "value": "1"},
            {"name": "kernel.shm_rmid_forced", "value": "1"},
            {"name": "net.ipv4.tcp_syncookies", "value": "../x"},
        ]}}});
        assert_eq!(
            super::pod_sysctls(&pod),
            [(
                "net/ipv4/ip_unprivileged_port_start".to_string(),
                "80".to_string()
            )]
        );
        assert!(super::pod_sysctls(&serde_json::json!({})).is_empty());
    }

    use super::*;
    #[test]
    fn dns_policies() {
        let cfg = crate::config::LabConfig::default();
        let first = resolv_conf(&json!({}), "shop", &cfg);
        assert_eq!(
            first,
            "search shop.svc.cluster.local svc.cluster.local cluster.local\nnameserver 172.17.16.10\noptions ndots:5\n"
        );
        let host = resolv_conf(&json!({"hostNetwork": true}), "shop", &cfg);
        assert_eq!(host, "nameserver 172.17.16.10\n");
        let host_cf = resolv_conf(
            &json!({"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"}),
            "shop",
            &cfg,
        );
        assert_eq!(host_cf, first);
        let none = resolv_conf(
            &json!({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["1.2.3.4"], "searches": ["a.b"], "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}}),
            "shop",
            &cfg,
        );
        assert_eq!(
            none,
            "search a.b\nnameserver 1.2.3.4\noptions ndots:2 edns0\n"
        );
    }
}
