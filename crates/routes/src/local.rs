//! The host's own routing, as every crate that reads it (`kubelan-sys`), plans over it
//! (`kubelan-cluster`'s discovery) or warns about it (this crate) sees it: one route type
//! and one address type, with no I/O.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

/// One of the host's routes (main table, unicast, with an output device).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalRoute {
    /// Destination.
    pub dst: IpNet,
    /// Output device.
    pub dev: String,
    /// Next hop, when not directly connected.
    pub gateway: Option<IpAddr>,
}

impl LocalRoute {
    /// How it is reached: `via 198.51.100.1 dev eth0`, `dev lan0` (shown in warnings).
    pub fn detail(&self) -> String {
        let mut parts = Vec::new();
        if let Some(g) = self.gateway {
            parts.push(format!("via {g}"));
        }
        if !self.dev.is_empty() {
            parts.push(format!("dev {}", self.dev));
        }
        parts.join(" ")
    }
}

impl fmt::Display for LocalRoute {
    /// `route 172.17.32.0/24 via 198.51.100.1 dev eth0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "route {}", self.dst)?;
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        write!(f, " dev {}", self.dev)
    }
}

/// One of the host's interface addresses, with its prefix length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalAddr {
    /// The interface.
    pub dev: String,
    /// The address and prefix length, e.g. `172.17.33.5/24`.
    pub net: IpNet,
}

impl fmt::Display for LocalAddr {
    /// `address 172.17.33.5/24 on eth1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "address {} on {}", self.net, self.dev)
    }
}

/// [`RoutesInput::other_routes`](crate::RoutesInput::other_routes) as `{"dst", "detail"}`
/// objects.
pub(crate) fn serialize_with_detail<S: Serializer>(
    routes: &[LocalRoute],
    s: S,
) -> Result<S::Ok, S::Error> {
    struct WithDetail<'a>(&'a LocalRoute);
    impl Serialize for WithDetail<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut st = s.serialize_struct("LocalRoute", 2)?;
            st.serialize_field("dst", &self.0.dst)?;
            st.serialize_field("detail", &self.0.detail())?;
            st.end()
        }
    }
    s.collect_seq(routes.iter().map(WithDetail))
}

/// A route for unit tests: `dst` via `gw` (if any) on `dev`.
#[cfg(test)]
pub(crate) fn route(dst: &str, gw: Option<&str>, dev: &str) -> LocalRoute {
    LocalRoute {
        dst: dst.parse().unwrap(),
        dev: dev.into(),
        gateway: gw.map(|g| g.parse().unwrap()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detail_and_display() {
        let r = route("172.17.33.0/24", Some("198.51.100.1"), "eth1");
        assert_eq!(r.detail(), "via 198.51.100.1 dev eth1");
        assert_eq!(
            r.to_string(),
            "route 172.17.33.0/24 via 198.51.100.1 dev eth1"
        );
        assert_eq!(route("172.16.0.0/16", None, "lan0").detail(), "dev lan0");
    }

    #[test]
    fn the_renderers_input_keeps_its_json_form() {
        let input = crate::RoutesInput {
            other_routes: vec![route("172.17.33.0/24", Some("198.51.100.1"), "eth1")],
            ..crate::RoutesInput::default()
        };
        let v = serde_json::to_value(&input).unwrap();
        assert_eq!(
            v["other_routes"],
            serde_json::json!([{"dst": "172.17.33.0/24", "detail": "via 198.51.100.1 dev eth1"}])
        );
    }
}
