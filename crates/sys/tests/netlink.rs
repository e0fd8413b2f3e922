//! rtnetlink helpers and route guards, against a real kernel inside private network
//! namespaces (root only). The root namespace must come out byte-identical.

#![cfg(target_os = "linux")]

use std::net::IpAddr;

use ipnet::IpNet;
use kubelan_sys::journal::{Change, HostGuard, Outcome, StateDir};
use kubelan_sys::net::{self, AddrEntry, NetError, RouteKind};
use kubelan_testkit::{Netns, TempDir, ok, root_available, root_snapshot};

fn p(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn route(dst: &str, dev: &str) -> Change {
    Change::Route {
        dst: p(dst),
        dev: dev.into(),
        gateway: None,
        ifindex: None,
    }
}

#[test]
fn netlink_helpers_in_a_private_namespace_leave_the_root_namespace_alone() {
    if !root_available("netlink_helpers_in_a_private_namespace") {
        return;
    }
    let before = root_snapshot();
    {
        let ns = Netns::new("sys");
        ns.ip(&["tuntap", "add", "dev", "kl0", "mode", "tun"]);
        ns.run(|| async {
            let index = net::link_index("kl0").await.unwrap();
            assert!(index > 1);
            let err = net::link_index("nope0").await.unwrap_err();
            assert!(matches!(err, NetError::NoSuchLink { .. }), "{err}");
            assert!(err.to_string().contains("nope0"), "{err}");

            net::link_up("kl0", Some(1380)).await.unwrap();
            net::addr_add("kl0", p("100.64.0.1/24")).await.unwrap();
            net::addr_add("kl0", p("fd00:6b6c::1/64")).await.unwrap();
            let err = net::addr_add("kl0", p("100.64.0.1/24")).await.unwrap_err();
            assert!(err.is_already_exists(), "{err}");
            assert!(err.to_string().contains("100.64.0.1/24 to kl0"), "{err}");

            net::route_add(p("172.17.32.0/19"), "kl0").await.unwrap();
            net::route_add(p("fd00:6b6c:1::/64"), "kl0").await.unwrap();
            let err = net::route_add(p("172.17.32.0/19"), "kl0")
                .await
                .unwrap_err();
            assert!(err.is_already_exists(), "{err}");
            let msg = err.to_string();
            assert!(
                msg.contains("add route 172.17.32.0/19 dev kl0") && msg.contains("File exists"),
                "{msg}"
            );
            let err = net::route_add(p("10.0.0.0/8"), "missing0")
                .await
                .unwrap_err();
            assert!(err.to_string().contains("missing0"), "{err}");

            net::route_add_via(p("192.0.2.10/32"), ip("100.64.0.254"), "kl0")
                .await
                .unwrap();
            let err = net::route_add_via(p("192.0.2.11/32"), ip("198.51.100.1"), "kl0")
                .await
                .unwrap_err();
            assert!(
                err.to_string()
                    .contains("192.0.2.11/32 via 198.51.100.1 dev kl0"),
                "{err}"
            );

            let routes = net::routes().await.unwrap();
            let find = |dst: &str| {
                routes
                    .iter()
                    .find(|r| r.dst == p(dst))
                    .unwrap_or_else(|| panic!("no route {dst} in {routes:#?}"))
            };
            let pods = find("172.17.32.0/19");
            assert_eq!(pods.dev.as_deref(), Some("kl0"));
            assert_eq!((pods.table, pods.protocol), (254, 4));
            assert_eq!(pods.kind, RouteKind::Unicast);
            assert_eq!(pods.to_string(), "172.17.32.0/19 dev kl0 proto static");
            assert_eq!(find("fd00:6b6c:1::/64").dev.as_deref(), Some("kl0"));
            let local = find("100.64.0.1/32");
            assert_eq!((local.table, local.kind), (255, RouteKind::Local));
            assert_eq!(find("192.0.2.10/32").gateway, Some(ip("100.64.0.254")));

            let addrs = net::addresses().await.unwrap();
            for want in [
                ("kl0", "100.64.0.1/24"),
                ("kl0", "fd00:6b6c::1/64"),
                ("lo", "127.0.0.1/8"),
            ] {
                let want = AddrEntry {
                    link: want.0.into(),
                    net: p(want.1),
                };
                assert!(addrs.contains(&want), "{want:?} not in {addrs:#?}");
            }

            let got = net::route_get(ip("172.17.40.1")).await.unwrap();
            assert_eq!(got.dev.as_deref(), Some("kl0"));
            assert_eq!(got.gateway, None);
            assert_eq!(got.source, Some(ip("100.64.0.1")));
            let got = net::route_get(ip("192.0.2.10")).await.unwrap();
            assert_eq!(got.gateway, Some(ip("100.64.0.254")));
            let got = net::route_get(ip("100.64.0.1")).await.unwrap();
            assert_eq!(got.kind, RouteKind::Local);
            let err = net::route_get(ip("203.0.113.1")).await.unwrap_err();
            assert!(
                err.to_string().contains("look up route to 203.0.113.1"),
                "{err}"
            );

            net::route_del(p("172.17.32.0/19"), "kl0").await.unwrap();
            let err = net::route_del(p("172.17.32.0/19"), "kl0")
                .await
                .unwrap_err();
            assert!(err.to_string().contains("no such route"), "{err}");
        });
        let link = ns.ip(&["link", "show", "kl0"]);
        assert!(link.contains("mtu 1380") && link.contains(",UP"), "{link}");
    }
    assert_eq!(before, root_snapshot(), "the root namespace changed");
}

#[test]
fn route_guard_restores_drops_and_withdraws_failed_changes() {
    if !root_available("route_guard_restores_drops_and_withdraws_failed_changes") {
        return;
    }
    let before = root_snapshot();
    let tmp = TempDir::new("guard");
    {
        let ns = Netns::new("sys");
        let state = StateDir::new(tmp.path().join("state"));
        let add_kl0 = |ns: &Netns| {
            ns.ip(&["tuntap", "add", "dev", "kl0", "mode", "tun"]);
            ns.ip(&["addr", "add", "100.64.0.1/24", "dev", "kl0"]);
            ns.ip(&["link", "set", "kl0", "up"]);
        };

        // restore() undoes in reverse order, with one human line per change.
        add_kl0(&ns);
        let s = state.clone();
        let report = ns.run(move || async move {
            let mut g = HostGuard::begin(&s, "connect").unwrap();
            g.apply(Change::Link {
                name: "kl0".into(),
                ifindex: None,
            })
            .await
            .unwrap();
            g.apply(route("172.17.32.0/19", "kl0")).await.unwrap();
            g.apply(route("172.17.16.0/20", "kl0")).await.unwrap();
            g.apply(Change::Route {
                dst: p("192.0.2.10/32"),
                dev: "kl0".into(),
                gateway: Some(ip("100.64.0.254")),
                ifindex: None,
            })
            .await
            .unwrap();
            // Failures withdraw their journal entry.
            let err = g.apply(route("172.17.16.0/20", "kl0")).await.unwrap_err();
            assert!(err.to_string().contains("File exists"), "{err}");
            let err = g.apply(route("10.0.0.0/8", "missing0")).await.unwrap_err();
            assert!(err.to_string().contains("missing0"), "{err}");
            assert_eq!(g.changes().len(), 4);
            assert!(matches!(
                g.changes()[0],
                Change::Link {
                    ifindex: Some(_),
                    ..
                }
            ));
            g.restore().await
        });
        assert!(report.is_clean(), "{report}");
        assert_eq!(
            report.to_string(),
            "removed route 192.0.2.10/32 via 100.64.0.254 dev kl0\n\
             removed route 172.17.16.0/20 dev kl0\n\
             removed route 172.17.32.0/19 dev kl0\n\
             removed link kl0"
        );
        assert!(!ns.ip(&["link"]).contains("kl0"));

        // Dropping the guard inside a runtime undoes too.
        add_kl0(&ns);
        let s = state.clone();
        ns.run(move || async move {
            let mut g = HostGuard::begin(&s, "connect").unwrap();
            g.apply(route("172.17.32.0/19", "kl0")).await.unwrap();
            drop(g);
        });
        assert!(!ns.ip(&["route"]).contains("172.17.32.0/19"));

        // A route that vanished with its link is undone already.
        let s = state.clone();
        let name = ns.name().to_string();
        let report = ns.run(move || async move {
            let mut g = HostGuard::begin(&s, "connect").unwrap();
            g.apply(Change::Link {
                name: "kl0".into(),
                ifindex: None,
            })
            .await
            .unwrap();
            g.apply(route("172.17.32.0/19", "kl0")).await.unwrap();
            ok(std::process::Command::new("ip").args(["-n", &name, "link", "del", "kl0"]));
            g.restore().await
        });
        assert!(report.is_clean(), "{report}");
        assert!(
            report
                .outcomes
                .iter()
                .all(|o| matches!(o, Outcome::AlreadyGone(_))),
            "{report}"
        );
        assert!(
            kubelan_sys::journal::journals(&state).unwrap().is_empty(),
            "journals left behind"
        );
    }
    assert_eq!(before, root_snapshot(), "the root namespace changed");
}
