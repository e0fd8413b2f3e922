use super::gitops::{GitOpsTool, gitops_manager};
use super::*;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

fn id() -> SessionId {
    SessionId::parse("b7x2kq9d").unwrap()
}

fn meta(mode: Mode) -> SessionMeta {
    SessionMeta {
        id: id(),
        namespace: "team-a".into(),
        mode,
        user: "jane@example.com".into(),
        client_host: "laptop-3".into(),
        command: "kubelan expose 8080 --name web".into(),
    }
}

fn owner() -> SessionOwner {
    SessionOwner {
        name: "kubelan-b7x2kq9d".into(),
        uid: "0b9f4c1e-5d7a-4a2b-9c1d-2f3e4a5b6c7d".into(),
    }
}

fn relay() -> RelaySpec {
    RelaySpec {
        image: "ghcr.io/kubelan/kubelan:0.1.0".into(),
        listeners: vec![
            RelayListener {
                id: 0,
                protocol: Protocol::Tcp,
                port: 8080,
                port_name: "tcp-8080".into(),
            },
            RelayListener {
                id: 1,
                protocol: Protocol::Udp,
                port: 10053,
                port_name: "udp-53".into(),
            },
        ],
        carrier_port: 7445,
        grace: Duration::from_secs(10),
        first_grace: Duration::from_secs(60),
        token_sha256: "ab".repeat(32),
        restore: None,
    }
}

fn replace_relay() -> RelaySpec {
    RelaySpec {
        listeners: vec![RelayListener {
            id: 0,
            protocol: Protocol::Tcp,
            port: 80,
            port_name: "http".into(),
        }],
        restore: Some(ReplaceTarget {
            service: "web".into(),
            original_selector: BTreeMap::from([
                ("app".into(), "web".into()),
                ("tier".into(), "front".into()),
            ]),
        }),
        ..relay()
    }
}

fn pod_spec(job: &Job) -> PodSpec {
    job.spec.as_ref().unwrap().template.spec.clone().unwrap()
}

/// Every field Pod Security `restricted` checks, on the pod and the container, for both
/// kinds of relay.
#[test]
fn relay_pod_passes_pod_security_restricted() {
    for (mode, relay) in [(Mode::Expose, relay()), (Mode::Replace, replace_relay())] {
        let spec = pod_spec(&job(&meta(mode), &relay));
        assert!(spec.host_network.is_none() && spec.host_pid.is_none() && spec.host_ipc.is_none());
        assert!(
            spec.volumes.is_none(),
            "no volumes at all, so none of a forbidden type"
        );
        let psc = spec.security_context.as_ref().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(
            (psc.run_as_user, psc.run_as_group),
            (Some(65532), Some(65532))
        );
        assert_eq!(
            psc.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        assert_eq!(spec.containers.len(), 1);
        assert!(spec.init_containers.is_none() && spec.ephemeral_containers.is_none());
        let c = &spec.containers[0];
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.privileged, None);
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.run_as_user, Some(65532));
        let caps = sc.capabilities.as_ref().unwrap();
        assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
        assert!(caps.add.is_none());
        assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
        for p in c.ports.iter().flatten() {
            assert!(p.host_port.is_none() && p.host_ip.is_none());
        }
        // Only the sysctl the Pod Security `baseline` list allows, and only when needed.
        let sysctls: Vec<_> = psc
            .sysctls
            .iter()
            .flatten()
            .map(|s| (s.name.as_str(), s.value.as_str()))
            .collect();
        if mode == Mode::Replace {
            assert_eq!(sysctls, [("net.ipv4.ip_unprivileged_port_start", "80")]);
        } else {
            assert!(sysctls.is_empty());
        }
    }
}

/// The whole expose Job, field by field: a change here is a change of what every session
/// creates in users' clusters.
#[test]
fn expose_job_golden() {
    let j = job(&meta(Mode::Expose), &relay());
    let want = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "kubelan-b7x2kq9d",
            "namespace": "team-a",
            "labels": {
                "app.kubernetes.io/managed-by": "kubelan",
                "app.kubernetes.io/name": "kubelan-relay",
                "app.kubernetes.io/part-of": "kubelan",
                "kubelan.io/mode": "expose",
                "kubelan.io/session": "b7x2kq9d",
                "kubelan.io/user": "jane_example.com",
            },
            "annotations": {
                "kubelan.io/client-host": "laptop-3",
                "kubelan.io/command": "kubelan expose 8080 --name web",
                "kubelan.io/user": "jane@example.com",
                "kubelan.io/version": env!("CARGO_PKG_VERSION"),
            },
        },
        "spec": {
            "ttlSecondsAfterFinished": 0,
            "backoffLimit": 0,
            "completions": 1,
            "parallelism": 1,
            "template": {
                "metadata": {"labels": {
                    "app.kubernetes.io/managed-by": "kubelan",
                    "app.kubernetes.io/name": "kubelan-relay",
                    "app.kubernetes.io/part-of": "kubelan",
                    "kubelan.io/mode": "expose",
                    "kubelan.io/session": "b7x2kq9d",
                    "kubelan.io/user": "jane_example.com",
                }},
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 5,
                    "automountServiceAccountToken": false,
                    "enableServiceLinks": false,
                    "securityContext": {
                        "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "tolerations": [
                        {"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                         "effect": "NoExecute", "tolerationSeconds": 10},
                        {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                         "effect": "NoExecute", "tolerationSeconds": 10},
                    ],
                    "containers": [{
                        "name": "relay",
                        "image": "ghcr.io/kubelan/kubelan:0.1.0",
                        "args": [
                            "relay",
                            "--carrier-port", "7445",
                            "--listen", "8080=0",
                            "--listen", "10053=1/udp",
                            "--grace", "10",
                            "--first-grace", "60",
                            "--token-sha256", "ab".repeat(32),
                        ],
                        "env": [
                            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
                            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}},
                        ],
                        "ports": [
                            {"name": "kubelan-carrier", "containerPort": 7445, "protocol": "TCP"},
                            {"name": "tcp-8080", "containerPort": 8080, "protocol": "TCP"},
                            {"name": "udp-53", "containerPort": 10053, "protocol": "UDP"},
                        ],
                        "readinessProbe": {
                            "tcpSocket": {"port": "kubelan-carrier"},
                            "periodSeconds": 1, "failureThreshold": 2,
                        },
                        "resources": {
                            "requests": {"cpu": "10m", "memory": "32Mi"},
                            "limits": {"memory": "512Mi"},
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "capabilities": {"drop": ["ALL"]},
                            "readOnlyRootFilesystem": true,
                            "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                    }],
                },
            },
        },
    });
    assert_eq!(serde_json::to_value(&j).unwrap(), want);
    // And it survives YAML, as `kubectl apply` or a dry run would read it.
    let yaml = serde_saphyr::to_string(&j).unwrap();
    let back: Job = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(back, j);
}

#[test]
fn replace_job_gets_its_own_account_and_restore_arguments() {
    let j = job(&meta(Mode::Replace), &replace_relay());
    assert_eq!(
        j.metadata.annotations.as_ref().unwrap()["kubelan.io/service"],
        "web"
    );
    assert_eq!(
        j.metadata.labels.as_ref().unwrap()["kubelan.io/mode"],
        "replace"
    );
    let spec = pod_spec(&j);
    assert_eq!(
        spec.service_account_name.as_deref(),
        Some("kubelan-b7x2kq9d")
    );
    assert_eq!(spec.automount_service_account_token, Some(true));
    let args = spec.containers[0].args.as_ref().unwrap();
    assert_eq!(
        args[args.len() - 8..],
        [
            "--restore-service",
            "web",
            "--restore-selector",
            r#"{"app":"web","tier":"front"}"#,
            "--session",
            "b7x2kq9d",
            "--restore-timeout",
            "10",
        ]
    );
    // SIGTERM leaves the relay time to finish a restore.
    let grace = spec.termination_grace_period_seconds.unwrap();
    assert!(
        u64::try_from(grace).unwrap() > RELAY_RESTORE_TIMEOUT_SECONDS,
        "{grace}"
    );
    let ports: Vec<_> = spec.containers[0]
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.as_deref().unwrap(), p.container_port))
        .collect();
    assert_eq!(ports, [("kubelan-carrier", 7445), ("http", 80)]);
    // expose gets neither an account nor a token.
    let spec = pod_spec(&job(&meta(Mode::Expose), &relay()));
    assert_eq!(spec.service_account_name, None);
    assert_eq!(spec.automount_service_account_token, Some(false));
}

fn assert_owned(m: &ObjectMeta) {
    assert_eq!(
        m.namespace.as_deref(),
        Some("team-a"),
        "same namespace as the Job"
    );
    let refs = m.owner_references.as_ref().unwrap();
    assert_eq!(refs.len(), 1);
    let r = &refs[0];
    assert_eq!(
        (
            r.api_version.as_str(),
            r.kind.as_str(),
            r.name.as_str(),
            r.uid.as_str()
        ),
        (
            "batch/v1",
            "Job",
            "kubelan-b7x2kq9d",
            "0b9f4c1e-5d7a-4a2b-9c1d-2f3e4a5b6c7d"
        )
    );
    assert_eq!(r.block_owner_deletion, None);
    assert_eq!(r.controller, None);
    assert_eq!(session_of(m), Some("b7x2kq9d"));
    let a = m.annotations.as_ref().unwrap();
    assert_eq!(a["kubelan.io/user"], "jane@example.com");
    assert_eq!(a["kubelan.io/client-host"], "laptop-3");
}

#[test]
fn service_selects_the_relay_and_hangs_from_the_job() {
    let ports = [
        ServicePortSpec {
            name: "tcp-80".into(),
            port: 80,
            target_port: 10080,
            protocol: Protocol::Tcp,
        },
        ServicePortSpec {
            name: "udp-53".into(),
            port: 53,
            target_port: 10053,
            protocol: Protocol::Udp,
        },
    ];
    let s = service(&meta(Mode::Expose), &owner(), "dev-api", &ports);
    assert_owned(&s.metadata);
    assert_eq!(s.metadata.name.as_deref(), Some("dev-api"));
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(
        v["spec"],
        json!({
            "type": "ClusterIP",
            "selector": {"kubelan.io/session": "b7x2kq9d"},
            "ports": [
                {"name": "tcp-80", "port": 80, "targetPort": 10080, "protocol": "TCP"},
                {"name": "udp-53", "port": 53, "targetPort": 10053, "protocol": "UDP"},
            ],
        })
    );
    // The Job's pod template carries the label the selector names.
    let j = job(&meta(Mode::Expose), &relay());
    let template_labels = j.spec.unwrap().template.metadata.unwrap().labels.unwrap();
    for (k, val) in s.spec.unwrap().selector.unwrap() {
        assert_eq!(template_labels[&k], val);
    }
    assert_eq!(
        SessionOwner::from_job(&Job {
            metadata: ObjectMeta {
                name: Some("kubelan-b7x2kq9d".into()),
                uid: Some("0b9f4c1e-5d7a-4a2b-9c1d-2f3e4a5b6c7d".into()),
                ..ObjectMeta::default()
            },
            ..Job::default()
        }),
        Some(owner())
    );
    assert_eq!(SessionOwner::from_job(&Job::default()), None);
}

#[test]
fn replace_objects_hang_from_the_job_and_grant_only_the_one_service() {
    let m = meta(Mode::Replace);
    let lease = replace_lock(&m, &owner(), "web");
    assert_owned(&lease.metadata);
    assert_eq!(lease.metadata.name.as_deref(), Some("kubelan-replace-web"));
    assert_eq!(
        lease.spec.as_ref().unwrap().holder_identity.as_deref(),
        Some("session b7x2kq9d of jane@example.com on laptop-3 (kubelan expose 8080 --name web)")
    );
    let holder = LockHolder::from_lease(&lease).unwrap();
    assert_eq!(
        holder.to_string(),
        "session b7x2kq9d of jane@example.com on laptop-3 (kubelan expose 8080 --name web)"
    );
    assert_eq!(LockHolder::from_lease(&Lease::default()), None);

    let sa = relay_service_account(&m, &owner());
    assert_owned(&sa.metadata);
    assert_eq!(sa.metadata.name.as_deref(), Some("kubelan-b7x2kq9d"));

    let role = relay_role(&m, &owner(), "web");
    assert_owned(&role.metadata);
    let rules = role.rules.as_ref().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].api_groups.as_deref(), Some(&[String::new()][..]));
    assert_eq!(
        rules[0].resources.as_deref(),
        Some(&["services".to_string()][..])
    );
    assert_eq!(
        rules[0].resource_names.as_deref(),
        Some(&["web".to_string()][..])
    );
    assert_eq!(rules[0].verbs, ["get", "patch"]);

    let rb = relay_role_binding(&m, &owner());
    assert_owned(&rb.metadata);
    assert_eq!(
        (rb.role_ref.kind.as_str(), rb.role_ref.name.as_str()),
        ("Role", "kubelan-b7x2kq9d")
    );
    let s = &rb.subjects.as_ref().unwrap()[0];
    assert_eq!(
        (s.kind.as_str(), s.name.as_str(), s.namespace.as_deref()),
        ("ServiceAccount", "kubelan-b7x2kq9d", Some("team-a"))
    );
    // The pod runs as that account.
    let spec = pod_spec(&job(&m, &replace_relay()));
    assert_eq!(spec.service_account_name, sa.metadata.name);
}

#[test]
fn session_ids_and_listener_arguments() {
    assert_eq!(id().job_name(), "kubelan-b7x2kq9d");
    for bad in [
        "",
        "b7x2kq9",
        "b7x2kq9dd",
        "B7X2KQ9D",
        "b7x2kq0d",
        "b7x2-q9d",
        "aeiouaei",
    ] {
        let e = SessionId::parse(bad).unwrap_err();
        assert!(e.to_string().contains("kubectl get jobs"), "{e}");
    }
    for l in relay().listeners {
        let back: RelayListener = l.to_string().parse().unwrap();
        assert_eq!(
            (back.id, back.protocol, back.port),
            (l.id, l.protocol, l.port)
        );
    }
    let l: RelayListener = "8080=3/tcp".parse().unwrap();
    assert_eq!((l.port, l.id, l.protocol), (8080, 3, Protocol::Tcp));
    for bad in [
        "",
        "8080",
        "0=0",
        "80=0/sctp",
        "80=x",
        "65536=0",
        "80=0/udp/x",
        "80=-1",
        "+80=1",
        "80=1/UDP",
        "=1",
        "80=",
        "80=4294967296",
        "80==1",
    ] {
        assert!(bad.parse::<RelayListener>().is_err(), "{bad}");
    }
}

#[test]
fn random_ids_are_valid_and_differ() {
    let ids: std::collections::BTreeSet<_> = (0..200).map(|_| SessionId::generate()).collect();
    assert_eq!(ids.len(), 200);
    for id in &ids {
        assert_eq!(SessionId::parse(id.as_str()).as_ref(), Ok(id));
    }
}

#[test]
fn the_carrier_port_avoids_listeners() {
    assert_eq!(carrier_port(&[8080, 53]), 7445);
    assert_eq!(carrier_port(&[7445, 7446]), 7447);
    assert_eq!(carrier_port(&[65535, 7445]), 7446);
}

#[test]
fn label_values_are_valid() {
    for (user, want) in [
        ("jane@example.com", "jane_example.com"),
        (
            "system:serviceaccount:ci:deployer",
            "system_serviceaccount_ci_deployer",
        ),
        (
            "https://issuer.example#12345",
            "https___issuer.example_12345",
        ),
        ("-kubernetes-admin-", "kubernetes-admin"),
        ("", "unknown"),
        ("@@@", "unknown"),
        ("用户", "unknown"),
    ] {
        assert_eq!(label_value(user), want, "{user}");
    }
    let long = label_value(&format!("{}@x", "a".repeat(100)));
    assert_eq!(long.len(), 63);
}

#[test]
fn agent_image_is_the_relay_default() {
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "kubelan-agent"},
        "spec": {"selector": {}, "template": {"spec": {"containers": [
            {"name": "sidecar", "image": "other"},
            {"name": "agent", "image": "registry.example/kubelan:1.2.3"},
        ]}}},
    }))
    .unwrap();
    assert_eq!(
        agent_image(&d).as_deref(),
        Some("registry.example/kubelan:1.2.3")
    );
    assert_eq!(agent_image(&Deployment::default()), None);
}

fn meta_with(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> ObjectMeta {
    let map = |kv: &[(&str, &str)]| {
        (!kv.is_empty()).then(|| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
    };
    ObjectMeta {
        name: Some("web".into()),
        labels: map(labels),
        annotations: map(annotations),
        ..ObjectMeta::default()
    }
}

#[test]
fn gitops_signs() {
    // Plain Service, and one installed by Helm itself: nothing to warn about.
    assert_eq!(gitops_manager(&meta_with(&[("app", "web")], &[])), None);
    assert_eq!(
        gitops_manager(&meta_with(
            &[
                ("app.kubernetes.io/instance", "web"),
                ("app.kubernetes.io/managed-by", "Helm")
            ],
            &[("meta.helm.sh/release-name", "web")]
        )),
        None
    );

    let argo = gitops_manager(&meta_with(
        &[],
        &[("argocd.argoproj.io/tracking-id", "shop:/Service:team-a/web")],
    ))
    .unwrap();
    assert_eq!(
        (argo.tool, argo.owner.as_deref(), argo.certain),
        (GitOpsTool::ArgoCd, Some("shop"), true)
    );
    assert_eq!(
        argo.warning("web"),
        "Service web is managed by Argo CD (annotation argocd.argoproj.io/tracking-id, Application shop): if automated sync with self-heal is on, Argo CD puts the selector back while replace runs; turn self-heal off for the session (`argocd app set shop --self-heal=false`)"
    );

    let hint = gitops_manager(&meta_with(&[("app.kubernetes.io/instance", "shop")], &[])).unwrap();
    assert_eq!((hint.tool, hint.certain), (GitOpsTool::ArgoCd, false));
    assert_eq!(
        hint.warning("web"),
        "Service web has the label app.kubernetes.io/instance=shop, which Argo CD uses to track what it manages: if an Argo CD Application with self-heal manages it, Argo CD puts the selector back while replace runs; turn self-heal off for the session"
    );

    let custom =
        gitops_manager(&meta_with(&[("argocd.argoproj.io/instance", "shop")], &[])).unwrap();
    assert_eq!((custom.tool, custom.certain), (GitOpsTool::ArgoCd, true));
    let opts = gitops_manager(&meta_with(
        &[],
        &[("argocd.argoproj.io/sync-options", "ServerSideApply=true")],
    ))
    .unwrap();
    assert_eq!(opts.evidence, "annotation argocd.argoproj.io/sync-options");

    let flux = gitops_manager(&meta_with(
        &[
            ("kustomize.toolkit.fluxcd.io/name", "apps"),
            ("kustomize.toolkit.fluxcd.io/namespace", "flux-system"),
        ],
        &[],
    ))
    .unwrap();
    assert_eq!(flux.tool, GitOpsTool::FluxKustomization);
    assert_eq!(
        flux.warning("web"),
        "Service web is applied by Flux (label kustomize.toolkit.fluxcd.io/name, Kustomization flux-system/apps): Flux puts the selector back at its next reconciliation; suspend it for the session (`flux suspend kustomization apps -n flux-system`, and `flux resume` after)"
    );
    // Objects that opt out of kustomize-controller's reconciliation are left alone.
    for (k, v) in [
        ("kustomize.toolkit.fluxcd.io/reconcile", "disabled"),
        ("kustomize.toolkit.fluxcd.io/ssa", "IfNotPresent"),
        ("kustomize.toolkit.fluxcd.io/ssa", "Ignore"),
    ] {
        assert_eq!(
            gitops_manager(&meta_with(
                &[("kustomize.toolkit.fluxcd.io/name", "apps")],
                &[(k, v)]
            )),
            None,
            "{k}={v}"
        );
    }
    assert!(
        gitops_manager(&meta_with(
            &[("kustomize.toolkit.fluxcd.io/name", "apps")],
            &[("kustomize.toolkit.fluxcd.io/ssa", "Merge")]
        ))
        .is_some()
    );

    let helm = gitops_manager(&meta_with(
        &[
            ("helm.toolkit.fluxcd.io/name", "web"),
            ("helm.toolkit.fluxcd.io/namespace", "team-a"),
            ("app.kubernetes.io/instance", "web"),
        ],
        &[("meta.helm.sh/release-name", "web")],
    ))
    .unwrap();
    assert_eq!(helm.tool, GitOpsTool::FluxHelmRelease);
    assert!(
        helm.warning("web")
            .contains("`flux suspend helmrelease web -n team-a`"),
        "{}",
        helm.warning("web")
    );

    // Field managers alone are enough.
    for (manager, tool) in [
        ("argocd-controller", GitOpsTool::ArgoCd),
        ("argocd-application-controller", GitOpsTool::ArgoCd),
        ("kustomize-controller", GitOpsTool::FluxKustomization),
        ("helm-controller", GitOpsTool::FluxHelmRelease),
    ] {
        let mut m = meta_with(&[], &[]);
        m.managed_fields = Some(vec![
            ManagedFieldsEntry {
                manager: Some("kubectl".into()),
                ..ManagedFieldsEntry::default()
            },
            ManagedFieldsEntry {
                manager: Some(manager.into()),
                ..ManagedFieldsEntry::default()
            },
        ]);
        let f = gitops_manager(&m).unwrap();
        assert_eq!(f.tool, tool, "{manager}");
        assert!(f.warning("web").starts_with("Service web "));
        assert!(!f.warning("web").contains('\n'));
    }
}
