//! The objects a fresh lab cluster starts with: cluster DNS, the default workloads, the
//! Flannel network configuration, and the API server's mirror pod.

use serde_json::{Value, json};

use crate::config::LabConfig;

/// The image name whose pods run the current kubelan binary.
pub const KUBELAN_IMAGE: &str = "ghcr.io/kubelan/kubelan:dev";

/// Label of the cluster DNS pods (as in every Kubernetes distribution).
pub const DNS_LABEL: (&str, &str) = ("k8s-app", "kube-dns");

/// Objects always created: the kube-dns Deployment, Service and RBAC, and the Flannel
/// net-conf ConfigMap. Each entry is (namespace, object).
pub fn system(cfg: &LabConfig) -> Vec<(&'static str, Value)> {
    let domain = &cfg.cluster.domain;
    vec![
        (
            "",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-flannel"}}),
        ),
        (
            "kube-flannel",
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "kube-flannel-cfg", "labels": {"app": "flannel", "tier": "node"}},
                "data": {
                    "net-conf.json": serde_json::to_string_pretty(&json!({
                        "Network": cfg.cluster.pod_cidr.to_string(),
                        "Backend": {"Type": "host-gw"},
                    })).unwrap_or_default(),
                },
            }),
        ),
        (
            "kube-system",
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "kube-dns"}}),
        ),
        (
            "",
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": "system:kube-dns"},
                "rules": [
                    {"apiGroups": [""], "resources": ["services", "endpoints", "pods", "namespaces"], "verbs": ["list", "watch"]},
                    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
                ],
            }),
        ),
        (
            "",
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": "system:kube-dns"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:kube-dns"},
                "subjects": [{"kind": "ServiceAccount", "name": "kube-dns", "namespace": "kube-system"}],
            }),
        ),
        (
            "kube-system",
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "kube-dns", "labels": {"k8s-app": "kube-dns"}},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"k8s-app": "kube-dns"}},
                    "template": {
                        "metadata": {"labels": {"k8s-app": "kube-dns"}},
                        "spec": {
                            "serviceAccountName": "kube-dns",
                            "dnsPolicy": "Default",
                            "containers": [{
                                "name": "dnsmasq",
                                "image": KUBELAN_IMAGE,
                                "args": ["lab", "cluster-dns", "--domain", domain],
                                "ports": [
                                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                                    {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                                ],
                                "readinessProbe": {"tcpSocket": {"port": 53}, "periodSeconds": 1, "failureThreshold": 3},
                            }],
                        },
                    },
                },
            }),
        ),
        (
            "kube-system",
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "kube-dns", "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "KubeDNS"}},
                "spec": {
                    "clusterIP": cfg.cluster.dns_service_ip().to_string(),
                    "selector": {"k8s-app": "kube-dns"},
                    "ports": [
                        {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                        {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                    ],
                },
            }),
        ),
    ]
}

/// The default workloads: `default/web`, `default/echo`, `default/db`.
pub fn defaults() -> Vec<(&'static str, Value)> {
    vec![
        (
            "default",
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "labels": {"app": "web"}},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{
                            "name": "web",
                            "image": KUBELAN_IMAGE,
                            "args": ["lab", "serve", "http", "--listen", "0.0.0.0:80"],
                            "ports": [{"name": "http", "containerPort": 80}],
                            "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1},
                        }]},
                    },
                },
            }),
        ),
        (
            "default",
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web", "labels": {"app": "web"}},
                "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
            }),
        ),
        (
            "default",
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "echo", "labels": {"app": "echo"}},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": "echo"}},
                    "template": {
                        "metadata": {"labels": {"app": "echo"}},
                        "spec": {"containers": [{
                            "name": "echo",
                            "image": KUBELAN_IMAGE,
                            "args": ["lab", "serve", "echo", "--tcp", "0.0.0.0:7", "--udp", "0.0.0.0:7"],
                            "ports": [
                                {"name": "echo-tcp", "containerPort": 7, "protocol": "TCP"},
                                {"name": "echo-udp", "containerPort": 7, "protocol": "UDP"},
                            ],
                            "readinessProbe": {"tcpSocket": {"port": 7}, "periodSeconds": 1},
                        }]},
                    },
                },
            }),
        ),
        (
            "default",
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "echo", "labels": {"app": "echo"}},
                "spec": {"selector": {"app": "echo"}, "ports": [
                    {"name": "tcp", "port": 7, "protocol": "TCP", "targetPort": "echo-tcp"},
                    {"name": "udp", "port": 7, "protocol": "UDP", "targetPort": "echo-udp"},
                ]},
            }),
        ),
        (
            "default",
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "db", "labels": {"app": "db"}},
                "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"name": "db", "port": 5432, "targetPort": 5432}]},
            }),
        ),
        (
            "default",
            json!({
                "apiVersion": "apps/v1", "kind": "StatefulSet",
                "metadata": {"name": "db", "labels": {"app": "db"}},
                "spec": {
                    "serviceName": "db",
                    "replicas": 3,
                    "selector": {"matchLabels": {"app": "db"}},
                    "template": {
                        "metadata": {"labels": {"app": "db"}},
                        "spec": {"containers": [{
                            "name": "db",
                            "image": KUBELAN_IMAGE,
                            "args": ["lab", "serve", "echo", "--tcp", "0.0.0.0:5432"],
                            "ports": [{"name": "db", "containerPort": 5432}],
                            "readinessProbe": {"tcpSocket": {"port": 5432}, "periodSeconds": 1},
                        }]},
                    },
                },
            }),
        ),
    ]
}

/// The mirror pod of the static `kube-apiserver` pod on the control-plane node. Its
/// command line carries the flags discovery tools read (Service CIDR, node ports).
pub fn apiserver_mirror_pod(cfg: &LabConfig, node: &str, address: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": format!("kube-apiserver-{node}"),
            "labels": {"component": "kube-apiserver", "tier": "control-plane"},
            "annotations": {
                crate::kubelet::MIRROR_ANNOTATION: "kubelan-lab",
                "kubernetes.io/config.source": "file",
                "kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint": format!("{address}:6443"),
            },
        },
        "spec": {
            "nodeName": node,
            "hostNetwork": true,
            "priorityClassName": "system-node-critical",
            "containers": [{
                "name": "kube-apiserver",
                "image": KUBELAN_IMAGE,
                "command": [
                    "kube-apiserver",
                    format!("--advertise-address={address}"),
                    "--secure-port=6443",
                    "--authorization-mode=RBAC",
                    format!("--service-cluster-ip-range={}", cfg.cluster.service_cidr),
                    format!("--service-node-port-range={}", cfg.cluster.node_port_range),
                    "--tls-cert-file=/etc/kubernetes/pki/apiserver.crt",
                    "--client-ca-file=/etc/kubernetes/pki/ca.crt",
                ],
            }],
        },
    })
}
