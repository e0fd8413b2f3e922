use super::*;

use k8s_openapi::api::core::v1::PodSpec;

fn opts() -> InstallOptions {
    InstallOptions {
        namespace: "kubelan-system".into(),
        node_selector: [("role".to_string(), "edge".to_string())].into(),
        ..InstallOptions::default()
    }
}

fn pod_spec(m: &[Manifest]) -> PodSpec {
    m.iter()
        .find_map(|m| match m {
            Manifest::Deployment(d) => d.spec.as_ref()?.template.spec.clone(),
            _ => None,
        })
        .unwrap()
}

#[test]
fn pod_security_restricted() {
    let creds = AgentCredentials::generate("kubelan-system").unwrap();
    let m = manifests(&opts(), &creds);
    let spec = pod_spec(&m);
    let psc = spec.security_context.as_ref().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(
        (psc.run_as_user, psc.run_as_group, psc.fs_group),
        (Some(65532), Some(65532), Some(65532))
    );
    assert_eq!(
        psc.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault"
    );
    assert_eq!(spec.automount_service_account_token, Some(true));
    assert_eq!(spec.service_account_name.as_deref(), Some("kubelan-agent"));
    assert_eq!(spec.node_selector.as_ref().unwrap()["role"], "edge");
    let c = &spec.containers[0];
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_string()][..])
    );
    assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    assert_eq!(
        c.args.as_ref().unwrap().join(" "),
        "agent --listen-tls 0.0.0.0:7443 --listen-plain 127.0.0.1:7444 --health-listen 0.0.0.0:7440 --credentials /var/run/kubelan/credentials"
    );
    let env: Vec<_> = c
        .env
        .iter()
        .flatten()
        .map(|e| {
            (
                e.name.as_str(),
                e.value_from
                    .as_ref()
                    .unwrap()
                    .field_ref
                    .as_ref()
                    .unwrap()
                    .field_path
                    .as_str(),
            )
        })
        .collect();
    assert_eq!(
        env,
        [
            ("POD_NAME", "metadata.name"),
            ("POD_NAMESPACE", "metadata.namespace"),
            ("NODE_NAME", "spec.nodeName")
        ]
    );
    let ports: Vec<_> = c
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.as_deref().unwrap(), p.container_port))
        .collect();
    assert_eq!(ports, [("carrier", 7443), ("health", 7440)]);
    let probe = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        let h = p.as_ref().unwrap().http_get.as_ref().unwrap();
        (h.path.clone().unwrap(), h.port.clone())
    };
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    assert_eq!(
        probe(&c.readiness_probe),
        ("/readyz".into(), IntOrString::String("health".into()))
    );
    assert_eq!(
        probe(&c.liveness_probe),
        ("/healthz".into(), IntOrString::String("health".into()))
    );
    let res = c.resources.as_ref().unwrap();
    assert_eq!(res.requests.as_ref().unwrap()["cpu"].0, "50m");
    assert_eq!(res.requests.as_ref().unwrap()["memory"].0, "64Mi");
    assert_eq!(res.limits.as_ref().unwrap()["memory"].0, "512Mi");
    assert!(!res.limits.as_ref().unwrap().contains_key("cpu"));
    // The credentials volume projects only the agent's part, read-only.
    let vol = spec.volumes.as_ref().unwrap()[0].secret.as_ref().unwrap();
    assert_eq!(vol.secret_name.as_deref(), Some("kubelan-agent"));
    assert_eq!(vol.default_mode, Some(0o440));
    let items: Vec<_> = vol
        .items
        .iter()
        .flatten()
        .map(|i| (i.key.as_str(), i.path.as_str()))
        .collect();
    assert_eq!(
        items,
        [
            ("ca.crt", "ca.crt"),
            ("agent.crt", "tls.crt"),
            ("agent.key", "tls.key")
        ]
    );
    let mount = &c.volume_mounts.as_ref().unwrap()[0];
    assert_eq!(
        (mount.mount_path.as_str(), mount.read_only),
        ("/var/run/kubelan/credentials", Some(true))
    );
}

#[test]
fn policy_flags_reach_the_agent() {
    let creds = AgentCredentials::generate("kubelan-system").unwrap();
    let o = InstallOptions {
        allow: vec![
            "192.0.2.0/24".parse().unwrap(),
            "10.4.7.11/32".parse().unwrap(),
        ],
        allow_node_addresses: true,
        ..opts()
    };
    let spec = pod_spec(&manifests(&o, &creds));
    let args = spec.containers[0].args.as_ref().unwrap().join(" ");
    assert!(
        args.ends_with(
            "--credentials /var/run/kubelan/credentials --allow 192.0.2.0/24 --allow 10.4.7.11/32 --allow-node-addresses"
        ),
        "{args}"
    );
}

#[test]
fn labels_names_and_rbac() {
    let creds = AgentCredentials::generate("team").unwrap();
    let o = InstallOptions {
        namespace: "team".into(),
        service_type: ServiceType::ClusterIp,
        ..InstallOptions::default()
    };
    let m = manifests(&o, &creds);
    let kinds: Vec<_> = m.iter().map(|m| (m.kind(), m.name().to_string())).collect();
    assert_eq!(
        kinds,
        [
            ("namespace", "team".to_string()),
            ("serviceaccount", "kubelan-agent".into()),
            ("clusterrole", "kubelan-agent-team".into()),
            ("clusterrolebinding", "kubelan-agent-team".into()),
            ("secret", "kubelan-agent".into()),
            ("service", "kubelan-agent".into()),
            ("deployment", "kubelan-agent".into()),
        ]
    );
    for obj in &m {
        let v = serde_json::to_value(obj).unwrap();
        let l = &v["metadata"]["labels"];
        assert_eq!(l["app.kubernetes.io/name"], "kubelan-agent", "{v}");
        assert_eq!(l["app.kubernetes.io/part-of"], "kubelan");
        assert_eq!(l["app.kubernetes.io/managed-by"], "kubelan");
        if !matches!(
            obj,
            Manifest::Namespace(_) | Manifest::ClusterRole(_) | Manifest::ClusterRoleBinding(_)
        ) {
            assert_eq!(v["metadata"]["namespace"], "team");
        }
    }
    for obj in &m {
        match obj {
            Manifest::Namespace(n) => {
                let md = &n.metadata;
                assert_eq!(
                    md.labels.as_ref().unwrap()["pod-security.kubernetes.io/enforce"],
                    "restricted"
                );
                assert_eq!(
                    md.annotations.as_ref().unwrap()[CREATED_BY_ANNOTATION],
                    CREATED_BY_INSTALL
                );
            }
            Manifest::ClusterRole(r) => {
                let rules = r.rules.as_ref().unwrap();
                let mut got: Vec<String> = Vec::new();
                for rule in rules {
                    assert_eq!(rule.verbs, ["get", "list", "watch"]);
                    assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
                    for g in rule.api_groups.iter().flatten() {
                        for res in rule.resources.iter().flatten() {
                            got.push(format!("{res}.{g}"));
                        }
                    }
                }
                assert_eq!(
                    got,
                    [
                        "services.",
                        "pods.",
                        "nodes.",
                        "endpointslices.discovery.k8s.io",
                        "servicecidrs.networking.k8s.io"
                    ]
                );
            }
            Manifest::ClusterRoleBinding(b) => {
                assert_eq!(b.role_ref.name, "kubelan-agent-team");
                let s = &b.subjects.as_ref().unwrap()[0];
                assert_eq!(
                    (s.kind.as_str(), s.name.as_str(), s.namespace.as_deref()),
                    ("ServiceAccount", "kubelan-agent", Some("team"))
                );
            }
            Manifest::Service(s) => {
                let spec = s.spec.as_ref().unwrap();
                assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
                assert_eq!(
                    spec.selector.as_ref().unwrap()["app.kubernetes.io/name"],
                    "kubelan-agent"
                );
                let p = &spec.ports.as_ref().unwrap()[0];
                assert_eq!((p.name.as_deref(), p.port), (Some("carrier"), 7443));
            }
            Manifest::Secret(s) => {
                assert_eq!(s.type_.as_deref(), Some("Opaque"));
                let keys: Vec<_> = s.data.as_ref().unwrap().keys().cloned().collect();
                assert_eq!(
                    keys,
                    [
                        "agent.crt",
                        "agent.key",
                        "ca.crt",
                        "client.crt",
                        "client.key"
                    ]
                );
            }
            Manifest::Deployment(d) => {
                let spec = d.spec.as_ref().unwrap();
                assert_eq!(spec.replicas, Some(1));
                assert_eq!(spec.selector.match_labels.as_ref().unwrap().len(), 1);
                let tl = spec
                    .template
                    .metadata
                    .as_ref()
                    .unwrap()
                    .labels
                    .as_ref()
                    .unwrap();
                assert!(is_managed(Some(tl)));
            }
            Manifest::ServiceAccount(_) => {}
        }
    }
    // The default namespace keeps the plain names.
    let d = manifests(&InstallOptions::default(), &creds);
    assert_eq!(d[2].name(), "kubelan-agent");
}

#[test]
fn manifests_are_deterministic_except_credentials() {
    // Nothing but the Secret depends on the credentials, and nothing on time or chance, so a
    // re-install applies identical objects.
    let a = manifests(
        &opts(),
        &AgentCredentials::generate("kubelan-system").unwrap(),
    );
    let b = manifests(
        &opts(),
        &AgentCredentials::generate("kubelan-system").unwrap(),
    );
    for (x, y) in a.iter().zip(&b) {
        if matches!(x, Manifest::Secret(_)) {
            assert_ne!(x, y);
        } else {
            assert_eq!(x, y);
        }
    }
}

#[test]
fn dry_run_yaml_round_trips() {
    let o = opts();
    let creds = AgentCredentials::generate(&o.namespace).unwrap();
    let m = manifests(&o, &creds);
    let yaml = render_yaml(&o, &m).unwrap();
    assert!(yaml.starts_with("# kubelan agent in namespace kubelan-system"));
    assert!(yaml.contains("WARNING: this file contains private keys"));
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&yaml).unwrap();
    let docs: Vec<_> = docs.into_iter().filter(|d| !d.is_null()).collect();
    assert_eq!(docs.len(), m.len());
    for (doc, want) in docs.iter().zip(&m) {
        let doc = doc.clone();
        let same = match want {
            Manifest::Namespace(w) => serde_json::from_value::<Namespace>(doc).unwrap() == *w,
            Manifest::ServiceAccount(w) => {
                serde_json::from_value::<ServiceAccount>(doc).unwrap() == *w
            }
            Manifest::ClusterRole(w) => serde_json::from_value::<ClusterRole>(doc).unwrap() == *w,
            Manifest::ClusterRoleBinding(w) => {
                serde_json::from_value::<ClusterRoleBinding>(doc).unwrap() == *w
            }
            Manifest::Secret(w) => serde_json::from_value::<Secret>(doc).unwrap() == *w,
            Manifest::Service(w) => serde_json::from_value::<Service>(doc).unwrap() == *w,
            Manifest::Deployment(w) => serde_json::from_value::<Deployment>(doc).unwrap() == *w,
        };
        assert!(same, "{} did not round-trip", want.kind());
    }
    // Also directly into typed objects, as a YAML consumer would.
    let d: Vec<Deployment> =
        serde_saphyr::from_multiple(yaml.split("---\n").last().unwrap()).unwrap();
    assert_eq!(d[0].metadata.name.as_deref(), Some("kubelan-agent"));
    // The Secret's PEM survives the trip byte for byte.
    let s: Secret = serde_json::from_value(docs[4].clone()).unwrap();
    assert_eq!(
        s.data.unwrap()["client.key"].0,
        creds.client_key_pem.as_bytes()
    );
}
