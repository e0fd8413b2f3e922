use super::*;

#[test]
fn service_rows() {
    let cols = columns("Service", &[]);
    assert_eq!(
        names(&cols),
        [
            "Name",
            "Type",
            "Cluster-IP",
            "External-IP",
            "Port(s)",
            "Age",
            "Selector"
        ]
    );
    assert_eq!(wide_names(&cols), ["Selector"]);

    let svc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "creationTimestamp": "2024-04-01T12:00:00Z"},
        "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"],
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP",
                            "targetPort": 6443}]}
    });
    assert_eq!(
        cells("Service", svc),
        arr(json!([
            "kubernetes",
            "ClusterIP",
            "10.96.0.1",
            "<none>",
            "443/TCP",
            "30d",
            "<none>"
        ]))
    );

    let svc = json!({
        "metadata": {"name": "web", "creationTimestamp": "2024-05-01T11:57:00Z"},
        "spec": {"type": "NodePort", "clusterIPs": ["10.96.12.7"],
                 "selector": {"app": "web", "tier": "front"},
                 "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"},
                           {"port": 53, "protocol": "UDP"}]}
    });
    assert_eq!(
        cells("Service", svc),
        arr(json!([
            "web",
            "NodePort",
            "10.96.12.7",
            "<none>",
            "80:30080/TCP,53/UDP",
            "3m",
            "app=web,tier=front"
        ]))
    );

    let lb = json!({
        "metadata": {"name": "lb"},
        "spec": {"type": "LoadBalancer", "clusterIP": "10.96.3.3",
                 "externalIPs": ["192.0.2.10"],
                 "ports": [{"port": 443, "nodePort": 31443}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"},
                                                {"hostname": "lb.example.com"}]}}
    });
    let c = cells("Service", lb.clone());
    assert_eq!(c[2], "10.96.3.3");
    assert_eq!(c[3], "203.0.113.9,lb.example.com,192.0.2.10");
    assert_eq!(c[4], "443:31443/TCP");

    let mut pending = lb;
    pending["spec"]["externalIPs"] = json!([]);
    pending["status"] = json!({});
    assert_eq!(cells("Service", pending)[3], "<pending>");

    let headless = json!({"metadata": {"name": "db"},
        "spec": {"clusterIP": "None", "clusterIPs": ["None"], "externalIPs": ["198.51.100.1"]}});
    let c = cells("Service", headless);
    assert_eq!(c[1], "ClusterIP");
    assert_eq!(c[2], "None");
    assert_eq!(c[3], "198.51.100.1");
    assert_eq!(c[4], "<none>");

    let external = json!({"metadata": {"name": "ext"},
        "spec": {"type": "ExternalName", "externalName": "db.example.com"}});
    let c = cells("Service", external);
    assert_eq!(c[2], "<none>");
    assert_eq!(c[3], "db.example.com");
}

#[test]
fn endpoints_rows() {
    assert_eq!(
        names(&columns("Endpoints", &[])),
        ["Name", "Endpoints", "Age"]
    );
    let ep = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "web", "creationTimestamp": "2024-05-01T11:00:00Z"},
        "subsets": [{
            "addresses": [{"ip": "10.244.1.5"}, {"ip": "10.244.2.7"}],
            "notReadyAddresses": [{"ip": "10.244.3.9"}],
            "ports": [{"name": "http", "port": 80}, {"name": "metrics", "port": 9090}]
        }]
    });
    assert_eq!(
        cells("Endpoints", ep),
        arr(json!([
            "web",
            "10.244.1.5:80,10.244.2.7:80,10.244.1.5:9090 + 1 more...",
            "60m"
        ]))
    );
    let ep = json!({"metadata": {"name": "v6"}, "subsets": [
        {"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 443}]},
        {"addresses": [{"ip": "10.0.0.1"}]}
    ]});
    assert_eq!(cells("Endpoints", ep)[1], "[fd00::1]:443,10.0.0.1");
    assert_eq!(
        cells("Endpoints", json!({"metadata": {"name": "e"}}))[1],
        "<none>"
    );
}

#[test]
fn endpointslice_rows() {
    assert_eq!(
        names(&columns("EndpointSlice", &[])),
        ["Name", "AddressType", "Ports", "Endpoints", "Age"]
    );
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-abc12", "creationTimestamp": "2024-05-01T11:59:00Z"},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "named"}, {}],
        "endpoints": [
            {"addresses": ["10.244.1.5"], "conditions": {"ready": true}},
            {"addresses": ["10.244.2.7"]},
            {"addresses": ["10.244.3.9"]},
            {"addresses": ["10.244.4.1", "10.244.4.2"]}
        ]
    });
    assert_eq!(
        cells("EndpointSlice", slice),
        arr(json!([
            "web-abc12",
            "IPv4",
            "80,named,*",
            "10.244.1.5,10.244.2.7,10.244.3.9 + 2 more...",
            "60s"
        ]))
    );
    let empty = json!({"metadata": {"name": "e"}, "addressType": "IPv6"});
    let c = cells("EndpointSlice", empty);
    assert_eq!(c[2], "<unset>");
    assert_eq!(c[3], "<unset>");
}

#[test]
fn ingress_and_ingressclass_rows() {
    assert_eq!(
        names(&columns("Ingress", &[])),
        ["Name", "Class", "Hosts", "Address", "Ports", "Age"]
    );
    let ing = json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "web", "creationTimestamp": "2024-05-01T11:00:00Z"},
        "spec": {"ingressClassName": "nginx",
                 "tls": [{"hosts": ["a.example.com"]}],
                 "rules": [{"host": "a.example.com"}, {"host": "b.example.com"}, {},
                           {"host": "c.example.com"}, {"host": "d.example.com"}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}
    });
    assert_eq!(
        cells("Ingress", ing),
        arr(json!([
            "web",
            "nginx",
            "a.example.com,b.example.com,c.example.com + 2 more...",
            "203.0.113.7",
            "80, 443",
            "60m"
        ]))
    );
    let c = cells("Ingress", json!({"metadata": {"name": "bare"}}));
    assert_eq!(
        c[1..5],
        [json!("<none>"), json!("*"), json!(""), json!("80")]
    );

    let class = json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": "nginx"},
        "spec": {"controller": "k8s.io/ingress-nginx",
                 "parameters": {"apiGroup": "k8s.example.com", "kind": "IngressParameters",
                                "name": "external-lb"}}
    });
    let c = cells("IngressClass", class);
    assert_eq!(c[1], "k8s.io/ingress-nginx");
    assert_eq!(c[2], "IngressParameters.k8s.example.com/external-lb");
}

#[test]
fn networkpolicy_and_servicecidr_rows() {
    let np = json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "deny-all", "creationTimestamp": "2024-05-01T11:00:00Z"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}
    });
    assert_eq!(
        cells("NetworkPolicy", np),
        arr(json!(["deny-all", "<none>", "60m"]))
    );
    let np = json!({"metadata": {"name": "web"},
        "spec": {"podSelector": {"matchExpressions": [
            {"key": "app", "operator": "NotIn", "values": ["db"]},
            {"key": "role", "operator": "Exists"}]}}});
    assert_eq!(cells("NetworkPolicy", np)[1], "app notin (db),role");

    assert_eq!(
        names(&columns("ServiceCIDR", &[])),
        ["Name", "CIDRs", "Age"]
    );
    let cidr = json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR",
        "metadata": {"name": "kubernetes", "creationTimestamp": "2024-04-24T12:00:00Z"},
        "spec": {"cidrs": ["10.96.0.0/16", "fd00:10:96::/112"]}
    });
    assert_eq!(
        cells("ServiceCIDR", cidr),
        arr(json!(["kubernetes", "10.96.0.0/16,fd00:10:96::/112", "7d"]))
    );
}
