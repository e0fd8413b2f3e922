//! The environment `kubelan run` gives its program: the cluster address of the session's
//! Service, under kubelan's own names and under the settings the common registry clients
//! read, so that a program registers an address pods can dial instead of the machine's
//! own (unreachable) one.
//!
//! Pure: [`cluster_env`] turns the session's facts into the variables.

use std::net::IpAddr;

/// What the session knows once its Service exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionFacts {
    /// The Service's ClusterIP.
    pub cluster_ip: IpAddr,
    /// The Service's name.
    pub service: String,
    /// Its namespace.
    pub namespace: String,
    /// The cluster's DNS domain (`cluster.local`).
    pub cluster_domain: String,
    /// The Service ports, in the order of `--expose` (pods dial these).
    pub ports: Vec<u16>,
}

impl SessionFacts {
    /// The Service's fully qualified name: `NAME.NS.svc.DOMAIN`.
    pub fn fqdn(&self) -> String {
        format!(
            "{}.{}.svc.{}",
            self.service,
            self.namespace,
            self.cluster_domain.trim_end_matches('.')
        )
    }
}

/// The variables the program gets, in a fixed order. They replace variables of the same
/// name in kubelan's own environment: the point of `kubelan run` is that the program
/// announces the session's address.
///
/// - `KUBELAN_CLUSTER_IP`, `KUBELAN_CLUSTER_HOST` (the FQDN), `KUBELAN_CLUSTER_PORT`
///   (the first port) and `KUBELAN_CLUSTER_PORTS` (all, comma-separated);
/// - Spring Cloud Nacos: `SPRING_CLOUD_NACOS_DISCOVERY_IP` / `_PORT`;
/// - Eureka: `EUREKA_INSTANCE_IP_ADDRESS`, `EUREKA_INSTANCE_NON_SECURE_PORT` (and
///   `EUREKA_INSTANCE_PREFER_IP_ADDRESS=true`, without which Eureka registers the host
///   name);
/// - Spring Cloud Consul: `SPRING_CLOUD_CONSUL_DISCOVERY_IP_ADDRESS` (and
///   `SPRING_CLOUD_CONSUL_DISCOVERY_PREFER_IP_ADDRESS=true`);
/// - Dubbo: `DUBBO_IP_TO_REGISTRY`, `DUBBO_PORT_TO_REGISTRY`.
///
/// Port variables are left out when the session has no port yet.
pub fn cluster_env(f: &SessionFacts) -> Vec<(String, String)> {
    let ip = f.cluster_ip.to_string();
    let port = f.ports.first().map(u16::to_string);
    let mut env: Vec<(&str, String)> = vec![
        ("KUBELAN_CLUSTER_IP", ip.clone()),
        ("KUBELAN_CLUSTER_HOST", f.fqdn()),
    ];
    if let Some(p) = &port {
        env.push(("KUBELAN_CLUSTER_PORT", p.clone()));
        env.push((
            "KUBELAN_CLUSTER_PORTS",
            f.ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ));
    }
    env.push(("SPRING_CLOUD_NACOS_DISCOVERY_IP", ip.clone()));
    if let Some(p) = &port {
        env.push(("SPRING_CLOUD_NACOS_DISCOVERY_PORT", p.clone()));
    }
    env.push(("EUREKA_INSTANCE_IP_ADDRESS", ip.clone()));
    env.push(("EUREKA_INSTANCE_PREFER_IP_ADDRESS", "true".into()));
    if let Some(p) = &port {
        env.push(("EUREKA_INSTANCE_NON_SECURE_PORT", p.clone()));
    }
    env.push(("SPRING_CLOUD_CONSUL_DISCOVERY_IP_ADDRESS", ip.clone()));
    env.push((
        "SPRING_CLOUD_CONSUL_DISCOVERY_PREFER_IP_ADDRESS",
        "true".into(),
    ));
    env.push(("DUBBO_IP_TO_REGISTRY", ip));
    if let Some(p) = port {
        env.push(("DUBBO_PORT_TO_REGISTRY", p));
    }
    env.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(ports: Vec<u16>) -> SessionFacts {
        SessionFacts {
            cluster_ip: "172.17.16.42".parse().unwrap(),
            service: "laptop-app".into(),
            namespace: "team".into(),
            cluster_domain: "cluster.local.".into(),
            ports,
        }
    }

    fn get<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn every_registry_gets_the_cluster_address_and_the_first_port() {
        let env = cluster_env(&facts(vec![8080, 9090]));
        for (k, v) in [
            ("KUBELAN_CLUSTER_IP", "172.17.16.42"),
            ("KUBELAN_CLUSTER_HOST", "laptop-app.team.svc.cluster.local"),
            ("KUBELAN_CLUSTER_PORT", "8080"),
            ("KUBELAN_CLUSTER_PORTS", "8080,9090"),
            ("SPRING_CLOUD_NACOS_DISCOVERY_IP", "172.17.16.42"),
            ("SPRING_CLOUD_NACOS_DISCOVERY_PORT", "8080"),
            ("EUREKA_INSTANCE_IP_ADDRESS", "172.17.16.42"),
            ("EUREKA_INSTANCE_PREFER_IP_ADDRESS", "true"),
            ("EUREKA_INSTANCE_NON_SECURE_PORT", "8080"),
            ("SPRING_CLOUD_CONSUL_DISCOVERY_IP_ADDRESS", "172.17.16.42"),
            ("SPRING_CLOUD_CONSUL_DISCOVERY_PREFER_IP_ADDRESS", "true"),
            ("DUBBO_IP_TO_REGISTRY", "172.17.16.42"),
            ("DUBBO_PORT_TO_REGISTRY", "8080"),
        ] {
            assert_eq!(get(&env, k), Some(v), "{k}");
        }
        assert_eq!(env.len(), 13, "{env:?}");
        let mut names: Vec<_> = env.iter().map(|(k, _)| k).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), env.len(), "no variable twice");
    }

    #[test]
    fn without_a_port_only_addresses_are_set() {
        let env = cluster_env(&facts(vec![]));
        assert!(
            env.iter()
                .all(|(k, _)| !k.ends_with("PORT") && !k.ends_with("PORTS"))
        );
        assert_eq!(get(&env, "DUBBO_IP_TO_REGISTRY"), Some("172.17.16.42"));
    }

    #[test]
    fn ipv6_cluster_addresses_are_written_bare() {
        let mut f = facts(vec![80]);
        f.cluster_ip = "fd00::a".parse().unwrap();
        f.cluster_domain = "corp.example".into();
        let env = cluster_env(&f);
        assert_eq!(get(&env, "KUBELAN_CLUSTER_IP"), Some("fd00::a"));
        assert_eq!(
            get(&env, "KUBELAN_CLUSTER_HOST"),
            Some("laptop-app.team.svc.corp.example")
        );
    }
}
