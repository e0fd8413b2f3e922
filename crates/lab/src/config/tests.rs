//! Tests of parsing, defaults and validation of the lab configuration.

use super::*;

/// The fields of every issue `config` has.
fn fields(config: &LabConfig) -> Vec<String> {
    config
        .issues()
        .into_iter()
        .map(|issue| issue.field)
        .collect()
}

/// Asserts that `config` has an issue naming `field`.
#[track_caller]
fn assert_issue(config: &LabConfig, field: &str) {
    let issues = config.issues();
    assert!(
        issues.iter().any(|issue| issue.field == field),
        "expected an issue for {field}, got: {issues:#?}"
    );
    for issue in &issues {
        assert!(
            !issue.problem.is_empty() && !issue.fix.is_empty(),
            "{issue:?}"
        );
    }
}

fn v4net(text: &str) -> Ipv4Net {
    text.parse().unwrap()
}

fn v4(text: &str) -> Ipv4Addr {
    text.parse().unwrap()
}

fn parse_err(text: &str) -> String {
    match LabConfig::from_toml_str(text) {
        Err(error @ ConfigError::Parse { .. }) => error.to_string(),
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn config_default_is_valid() {
    let config = LabConfig::default();
    assert_eq!(config.issues(), Vec::new());
    config.validate().unwrap();
    assert_eq!(config.cluster.kubernetes_service_ip(), v4("172.17.16.1"));
    assert_eq!(config.cluster.dns_service_ip(), v4("172.17.16.10"));
    assert_eq!(config.control_plane().unwrap().name, "node1");
    assert_eq!(config.node("node2").unwrap().address, v4("10.4.7.12"));
    assert!(config.node("node3").is_none());
}

#[test]
fn config_default_matches_the_issue() {
    let c = LabConfig::default();
    assert_eq!(c.cluster.service_cidr, v4net("172.17.16.0/20"));
    assert_eq!(c.cluster.pod_cidr, v4net("172.17.32.0/19"));
    assert_eq!(c.cluster.domain, "cluster.local");
    assert_eq!(c.cluster.kubernetes_minor, 33);
    assert_eq!(c.cluster.node_port_range.to_string(), "30000-32767");
    assert_eq!(c.network.node_cidr, v4net("10.4.7.0/24"));
    assert_eq!(c.network.office_cidr, v4net("172.16.0.0/18"));
    assert_eq!(c.network.wan_cidr, v4net("198.51.100.0/24"));
    assert_eq!(c.network.mtu, 1500);
    assert_eq!(c.nodes.len(), 2);
    assert_eq!(c.nodes[1].pod_cidr, v4net("172.17.33.0/24"));
    assert!(!c.nodes[1].control_plane);
    assert_eq!(c.office.router_node_address, v4("10.4.7.1"));
    assert_eq!(c.office.router_lan_address, v4("172.16.0.1"));
    assert_eq!(c.office.pcs[1].address, v4("172.16.1.12"));
    assert!(c.office.nodes_route_back);
    assert_eq!(c.edge.node_address, v4("10.4.7.254"));
    assert_eq!(c.edge.wan_address, v4("198.51.100.1"));
    assert!(c.edge.nat, "the laptop is behind a NAT by default");
    assert_eq!(c.laptop.address, v4("198.51.100.10"));
    assert_eq!(c.laptop_address_in_cluster(), v4("10.4.7.254"));
    assert!(!c.faults.seed001);
    assert!(c.workloads.defaults);
    assert_eq!(c.users.len(), 1);
    assert_eq!(c.users[0].name, "developer");
    assert!(c.users[0].groups.is_empty());
}

#[test]
fn config_toml_round_trip() {
    let config = LabConfig::default();
    let text = config.to_toml();
    assert!(text.contains("service_cidr = \"172.17.16.0/20\""), "{text}");
    assert!(text.contains("node_port_range = \"30000-32767\""), "{text}");
    assert_eq!(LabConfig::from_toml_str(&text).unwrap(), config);

    let mut changed = LabConfig::default();
    changed.faults.seed001 = true;
    changed.edge.nat = false;
    changed.workloads.defaults = false;
    changed.office.pcs.clear();
    changed.users.push(UserConfig {
        name: "ops".to_owned(),
        groups: vec!["system:masters".to_owned(), "ops".to_owned()],
    });
    changed.nodes[1].name = "worker-2".to_owned();
    let text = changed.to_toml();
    assert_eq!(LabConfig::from_toml_str(&text).unwrap(), changed, "{text}");
}

#[test]
fn config_empty_and_partial_files_use_defaults() {
    assert_eq!(LabConfig::from_toml_str("").unwrap(), LabConfig::default());
    let config = LabConfig::from_toml_str(
        "[network]\nmtu = 9000\n\n[faults]\nseed001 = true\n\n[[users]]\nname = \"alice\"\n",
    )
    .unwrap();
    assert_eq!(config.network.mtu, 9000);
    assert_eq!(config.network.node_cidr, v4net("10.4.7.0/24"));
    assert!(config.faults.seed001);
    assert_eq!(config.users.len(), 1);
    assert_eq!(config.users[0].name, "alice");
    assert_eq!(config.nodes, LabConfig::default().nodes);
}

#[test]
fn config_edge_nat_switch() {
    let config = LabConfig::from_toml_str("[edge]\nnat = false\n").unwrap();
    assert!(!config.edge.nat);
    assert_eq!(config.edge.node_address, v4("10.4.7.254"));
    assert_eq!(config.laptop_address_in_cluster(), v4("198.51.100.10"));
    // A record written before the switch existed reads as behind the NAT.
    let old = "[edge]\nnode_address = \"10.4.7.254\"\nwan_address = \"198.51.100.1\"\n";
    assert!(LabConfig::from_toml_str(old).unwrap().edge.nat);
    let message = parse_err("[edge]\nnat = \"yes\"\n");
    assert!(message.contains("line 2"), "{message}");
    assert!(message.contains("bool"), "{message}");
}

#[test]
fn config_unknown_keys_are_rejected() {
    let message = parse_err("[cluster]\nservice_cird = \"172.17.16.0/20\"\n");
    assert!(message.contains("unknown field"), "{message}");
    assert!(message.contains("service_cird"), "{message}");
    assert!(message.contains("line 2"), "{message}");

    let message = parse_err("colour = \"blue\"\n");
    assert!(message.contains("unknown field"), "{message}");
    assert!(message.contains("colour"), "{message}");

    let message = parse_err(
        "[[nodes]]\nname = \"n1\"\naddress = \"10.4.7.11\"\npod_cidr = \"172.17.32.0/24\"\nrole = \"x\"\n",
    );
    assert!(message.contains("role"), "{message}");
}

#[test]
fn config_syntax_errors_show_line_and_column() {
    let message = parse_err("[network]\nmtu = = 1500\n");
    assert!(message.contains("line 2"), "{message}");
    assert!(message.contains("column"), "{message}");
}

#[test]
fn config_bad_values_are_parse_errors_with_clear_messages() {
    let message = parse_err("[cluster]\nservice_cidr = \"fd00::/108\"\n");
    assert!(message.contains("IPv6 is not supported yet"), "{message}");
    assert!(message.contains("line 2"), "{message}");

    let message = parse_err("[laptop]\naddress = \"2001:db8::1\"\n");
    assert!(message.contains("IPv6 is not supported yet"), "{message}");

    let message = parse_err("[network]\nnode_cidr = \"10.4.7.0\"\n");
    assert!(message.contains("10.4.7.0/24"), "{message}");

    let message = parse_err("[laptop]\naddress = \"198.51.100.10/24\"\n");
    assert!(message.contains("\"198.51.100.10\""), "{message}");

    let message = parse_err("[network]\nwan_cidr = \"banana\"\n");
    assert!(message.contains("not an IPv4 network"), "{message}");

    let message = parse_err("[cluster]\nnode_port_range = \"30000\"\n");
    assert!(message.contains("port range"), "{message}");

    let message = parse_err("[cluster]\nnode_port_range = \"30000-70000\"\n");
    assert!(message.contains("out of range"), "{message}");

    let message = parse_err("[network]\nmtu = \"big\"\n");
    assert!(message.contains("line 2"), "{message}");
}

#[test]
fn config_reports_every_problem_at_once() {
    let text = r#"
[cluster]
service_cidr = "172.17.16.5/20"
kubernetes_minor = 12

[network]
mtu = 100

[[nodes]]
name = "Node_1"
address = "10.9.9.9"
pod_cidr = "172.17.32.0/24"

[[users]]
name = "system:admin"
"#;
    let error = LabConfig::from_toml_str(text).unwrap_err();
    let fields: Vec<&str> = error.issues().iter().map(|i| i.field.as_str()).collect();
    for field in [
        "cluster.service_cidr",
        "cluster.kubernetes_minor",
        "network.mtu",
        "nodes",
        "nodes[0].name",
        "nodes[0].address",
        "users[0].name",
    ] {
        assert!(fields.contains(&field), "{field} missing from {fields:?}");
    }
    let message = error.to_string();
    assert!(message.starts_with(&format!("invalid lab config: {} problems:", fields.len())));
    assert_eq!(message.lines().count(), fields.len() + 1, "{message}");
    assert!(message.contains("172.17.16.0/20"), "{message}");
}

#[test]
fn config_load_reads_and_reports_files() {
    let dir = std::env::temp_dir().join(format!("kubelan-lab-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let good = dir.join("good.toml");
    std::fs::write(&good, LabConfig::default().to_toml()).unwrap();
    assert_eq!(LabConfig::load(&good).unwrap(), LabConfig::default());

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[network]\nmtu = 1500\nmtu = 1400\n").unwrap();
    let message = LabConfig::load(&bad).unwrap_err().to_string();
    assert!(message.contains("bad.toml"), "{message}");
    assert!(message.contains("line 3"), "{message}");

    let invalid = dir.join("invalid.toml");
    std::fs::write(&invalid, "[network]\nmtu = 1\n").unwrap();
    let error = LabConfig::load(&invalid).unwrap_err();
    assert_eq!(error.issues()[0].field, "network.mtu");

    let missing = dir.join("missing.toml");
    let error = LabConfig::load(&missing).unwrap_err();
    assert!(matches!(error, ConfigError::Read { .. }), "{error:?}");
    assert!(error.to_string().contains("missing.toml"));

    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn config_networks_must_be_canonical() {
    let mut c = LabConfig::default();
    c.network.node_cidr = v4net("10.4.7.5/24");
    let issues = c.issues();
    assert_eq!(issues.len(), 1, "{issues:#?}");
    assert_eq!(issues[0].field, "network.node_cidr");
    assert!(issues[0].fix.contains("10.4.7.0/24"), "{issues:#?}");

    for field in [
        "cluster.pod_cidr",
        "network.office_cidr",
        "network.wan_cidr",
    ] {
        let mut c = LabConfig::default();
        match field {
            "cluster.pod_cidr" => c.cluster.pod_cidr = v4net("172.17.32.1/19"),
            "network.office_cidr" => c.network.office_cidr = v4net("172.16.0.1/18"),
            _ => c.network.wan_cidr = v4net("198.51.100.7/24"),
        }
        assert_eq!(fields(&c), vec![field.to_owned()]);
    }

    let mut c = LabConfig::default();
    c.nodes[0].pod_cidr = v4net("172.17.32.9/24");
    assert_eq!(fields(&c), vec!["nodes[0].pod_cidr".to_owned()]);
}

#[test]
fn config_networks_must_not_overlap() {
    let mut c = LabConfig::default();
    c.cluster.service_cidr = v4net("172.17.32.0/20");
    assert_issue(&c, "cluster.pod_cidr");

    let mut c = LabConfig::default();
    c.network.office_cidr = v4net("10.0.0.0/8");
    assert_issue(&c, "network.office_cidr");

    let mut c = LabConfig::default();
    c.network.wan_cidr = v4net("172.16.0.0/24");
    assert_issue(&c, "network.wan_cidr");
    let issue = c
        .issues()
        .into_iter()
        .find(|i| i.field == "network.wan_cidr")
        .unwrap();
    assert!(issue.problem.contains("network.office_cidr"), "{issue:?}");
}

#[test]
fn config_cluster_rules() {
    let mut c = LabConfig::default();
    c.cluster.service_cidr = v4net("172.17.16.0/29");
    assert_issue(&c, "cluster.service_cidr");
    c.cluster.service_cidr = v4net("172.0.0.0/11");
    assert_issue(&c, "cluster.service_cidr");
    c.cluster.service_cidr = v4net("172.17.16.0/28");
    c.validate().unwrap();
    assert_eq!(c.cluster.dns_service_ip(), v4("172.17.16.10"));

    let mut c = LabConfig::default();
    c.cluster.kubernetes_minor = 29;
    assert_issue(&c, "cluster.kubernetes_minor");
    c.cluster.kubernetes_minor = 38;
    assert_issue(&c, "cluster.kubernetes_minor");
    c.cluster.kubernetes_minor = 37;
    c.validate().unwrap();

    let mut c = LabConfig::default();
    c.cluster.node_port_range = PortRange { first: 0, last: 10 };
    assert_issue(&c, "cluster.node_port_range");
    c.cluster.node_port_range = PortRange {
        first: 32767,
        last: 30000,
    };
    assert_issue(&c, "cluster.node_port_range");
    c.cluster.node_port_range = PortRange {
        first: 80,
        last: 80,
    };
    assert_issue(&c, "cluster.node_port_range");

    for domain in ["", "Cluster.local", "cluster.local.", "a..b", "-x.local"] {
        let mut c = LabConfig::default();
        c.cluster.domain = domain.to_owned();
        assert_issue(&c, "cluster.domain");
    }
}

#[test]
fn config_mtu_range() {
    for (mtu, ok) in [(575, false), (576, true), (9000, true), (9001, false)] {
        let mut c = LabConfig::default();
        c.network.mtu = mtu;
        assert_eq!(c.issues().is_empty(), ok, "mtu {mtu}");
        if !ok {
            assert_issue(&c, "network.mtu");
        }
    }
}

#[test]
fn config_node_pod_cidrs() {
    let mut c = LabConfig::default();
    c.nodes[1].pod_cidr = v4net("172.18.0.0/24");
    assert_issue(&c, "nodes[1].pod_cidr");

    let mut c = LabConfig::default();
    c.nodes[1].pod_cidr = v4net("172.17.32.128/25");
    assert_issue(&c, "nodes[1].pod_cidr");

    let mut c = LabConfig::default();
    c.nodes[1].pod_cidr = v4net("172.17.33.0/29");
    assert_issue(&c, "nodes[1].pod_cidr");

    let mut c = LabConfig::default();
    c.cluster.pod_cidr = v4net("172.0.0.0/12");
    c.cluster.service_cidr = v4net("10.96.0.0/12");
    c.nodes[0].pod_cidr = v4net("172.0.0.0/16");
    c.nodes[1].pod_cidr = v4net("172.2.0.0/15");
    assert_issue(&c, "nodes[1].pod_cidr");
    c.nodes[1].pod_cidr = v4net("172.2.0.0/16");
    c.validate().unwrap();
}

#[test]
fn config_node_count_and_control_plane() {
    let mut c = LabConfig::default();
    c.nodes.clear();
    assert_eq!(fields(&c), vec!["nodes".to_owned()]);

    let mut c = LabConfig {
        nodes: (0..17)
            .map(|i| NodeConfig {
                name: format!("node{}", i + 1),
                address: Ipv4Addr::new(10, 4, 7, 11 + i),
                pod_cidr: Ipv4Net::new(Ipv4Addr::new(172, 17, 32 + i, 0), 24).unwrap(),
                control_plane: i == 0,
            })
            .collect(),
        ..LabConfig::default()
    };
    assert_eq!(fields(&c), vec!["nodes".to_owned()]);
    c.nodes.pop();
    c.validate().unwrap();

    let mut c = LabConfig::default();
    c.nodes[0].control_plane = false;
    assert_eq!(fields(&c), vec!["nodes".to_owned()]);

    let mut c = LabConfig::default();
    c.nodes[1].control_plane = true;
    assert_eq!(fields(&c), vec!["nodes".to_owned()]);
    assert!(c.issues()[0].problem.contains("node1, node2"));
}

#[test]
fn config_node_addresses() {
    let mut c = LabConfig::default();
    c.nodes[1].address = v4("10.4.8.12");
    assert_eq!(fields(&c), vec!["nodes[1].address".to_owned()]);

    let mut c = LabConfig::default();
    c.nodes[1].address = v4("10.4.7.11");
    assert_eq!(fields(&c), vec!["nodes[1].address".to_owned()]);
    assert!(c.issues()[0].problem.contains("nodes[0].address"));

    let mut c = LabConfig::default();
    c.nodes[1].address = v4("10.4.7.0");
    assert_eq!(fields(&c), vec!["nodes[1].address".to_owned()]);
    assert!(c.issues()[0].problem.contains("network address"));

    let mut c = LabConfig::default();
    c.nodes[1].address = v4("10.4.7.255");
    assert_eq!(fields(&c), vec!["nodes[1].address".to_owned()]);
    assert!(c.issues()[0].problem.contains("broadcast"));
}

#[test]
fn config_host_names() {
    for bad in [
        "",
        "Node1",
        "node_1",
        "-node",
        "node-",
        "a-very-long-name",
        "nödé",
    ] {
        let mut c = LabConfig::default();
        c.nodes[1].name = bad.to_owned();
        assert_eq!(fields(&c), vec!["nodes[1].name".to_owned()], "{bad:?}");
    }
    let mut c = LabConfig::default();
    c.nodes[1].name = "fifteen-chars-x".to_owned();
    c.validate().unwrap();

    let mut c = LabConfig::default();
    c.office.pcs[0].name = "node1".to_owned();
    assert_eq!(fields(&c), vec!["office.pcs[0].name".to_owned()]);

    let mut c = LabConfig::default();
    c.office.pcs[1].name = "pc1".to_owned();
    assert_eq!(fields(&c), vec!["office.pcs[1].name".to_owned()]);

    for reserved in RESERVED_HOST_NAMES {
        let mut c = LabConfig::default();
        c.nodes[1].name = reserved.to_owned();
        assert_eq!(fields(&c), vec!["nodes[1].name".to_owned()], "{reserved}");
    }
}

#[test]
fn config_router_pc_edge_laptop_addresses() {
    type Change = fn(&mut LabConfig);
    let cases: [(&str, Change); 7] = [
        ("office.router_node_address", |c| {
            c.office.router_node_address = v4("172.16.0.2")
        }),
        ("office.router_lan_address", |c| {
            c.office.router_lan_address = v4("10.4.7.2")
        }),
        ("office.pcs[1].address", |c| {
            c.office.pcs[1].address = v4("172.16.64.1")
        }),
        ("edge.node_address", |c| {
            c.edge.node_address = v4("198.51.100.2")
        }),
        ("edge.wan_address", |c| {
            c.edge.wan_address = v4("10.4.7.253")
        }),
        ("laptop.address", |c| {
            c.laptop.address = v4("198.51.100.255")
        }),
        ("laptop.address", |c| c.laptop.address = v4("198.51.100.1")),
    ];
    for (field, change) in cases {
        let mut c = LabConfig::default();
        change(&mut c);
        assert_eq!(fields(&c), vec![field.to_owned()]);
    }
}

#[test]
fn config_users() {
    let mut c = LabConfig::default();
    c.users[0].name = String::new();
    assert_eq!(fields(&c), vec!["users[0].name".to_owned()]);

    let mut c = LabConfig::default();
    c.users[0].name = "system:kube-proxy".to_owned();
    assert_eq!(fields(&c), vec!["users[0].name".to_owned()]);

    let mut c = LabConfig::default();
    c.users.push(c.users[0].clone());
    assert_eq!(fields(&c), vec!["users[1].name".to_owned()]);

    let mut c = LabConfig::default();
    c.users[0].groups = vec!["ok".to_owned(), String::new()];
    assert_eq!(fields(&c), vec!["users[0].groups[1]".to_owned()]);

    let mut c = LabConfig::default();
    c.users.clear();
    c.validate().unwrap();
}

#[test]
fn config_error_display() {
    let error = ConfigError::Invalid(vec![
        ConfigIssue {
            field: "a.b".to_owned(),
            problem: "bad".to_owned(),
            fix: "make it good".to_owned(),
        },
        ConfigIssue {
            field: "c".to_owned(),
            problem: "worse".to_owned(),
            fix: "remove it".to_owned(),
        },
    ]);
    assert_eq!(
        error.to_string(),
        "invalid lab config: 2 problems:\n  a.b: bad (fix: make it good)\n  c: worse (fix: remove it)"
    );
}

#[test]
fn config_port_range_parsing() {
    let range: PortRange = "30000-32767".parse().unwrap();
    assert_eq!(
        range,
        PortRange {
            first: 30000,
            last: 32767
        }
    );
    assert_eq!(range.len(), 2768);
    assert!(range.contains(30000) && range.contains(32767) && !range.contains(32768));
    assert!(!range.is_empty());
    assert!("30000".parse::<PortRange>().is_err());
    assert!("a-b".parse::<PortRange>().is_err());
    assert!("-5".parse::<PortRange>().is_err());
    assert!("1-65536".parse::<PortRange>().is_err());
}

#[test]
fn config_lab_names() {
    for good in ["a", "lab", "my-lab-2", "abcdefghijkl"] {
        validate_lab_name(good).unwrap();
    }
    for bad in [
        "",
        "abcdefghijklm",
        "Lab",
        "2lab",
        "-lab",
        "my_lab",
        "lab.1",
        "läb",
    ] {
        let error = validate_lab_name(bad).unwrap_err();
        assert!(
            matches!(error, ConfigError::InvalidLabName { .. }),
            "{bad:?}: {error:?}"
        );
        assert!(error.to_string().contains("fix:"), "{error}");
    }
}
