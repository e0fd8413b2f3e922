//! The root network namespace as text: what a test must leave exactly as it found it.

use std::process::Command;

/// Sysctls a gateway or a lab could change in the root namespace.
const SYSCTLS: [&str; 3] = [
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/send_redirects",
    "net/ipv4/conf/default/send_redirects",
];

/// Everything in the root namespace that kubelan, a lab or a test namespace could change:
/// links, addresses of both families, routes of every table and both families, policy
/// rules, the nft ruleset and the forwarding and redirect sysctls. Compare a snapshot taken
/// before a test with one taken after it.
pub fn root_snapshot() -> String {
    let mut s = String::new();
    for args in [
        &["-o", "link"][..],
        &["-o", "addr"],
        &["-4", "route", "show", "table", "all"],
        &["-6", "route", "show", "table", "all"],
        &["rule"],
    ] {
        s.push_str(&format!("== ip {}\n", args.join(" ")));
        s.push_str(&output_of(Command::new("ip").args(args)));
    }
    s.push_str("== nft list ruleset\n");
    s.push_str(&output_of(Command::new("nft").args(["list", "ruleset"])));
    for key in SYSCTLS {
        s.push_str(&format!(
            "== {key} = {}",
            std::fs::read_to_string(format!("/proc/sys/{key}")).unwrap_or_default()
        ));
    }
    s
}

/// stdout of `cmd`, or a line saying it could not run (the same before and after, so a
/// machine without `nft` can still compare the rest).
fn output_of(cmd: &mut Command) -> String {
    match cmd.output() {
        Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
        Err(e) => format!("(cannot run: {e})\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::Netns;
    use crate::skip::root_or_skip;

    #[test]
    fn names_every_section() {
        let s = root_snapshot();
        for section in [
            "ip -o link",
            "ip -o addr",
            "ip -6 route",
            "ip rule",
            "nft",
            "ip_forward",
        ] {
            assert!(s.contains(section), "{section} missing from:\n{s}");
        }
    }

    /// Taken inside a private namespace (so nothing touches the machine's), the snapshot
    /// changes with each kind of change it is meant to catch, in that kind's section.
    #[test]
    fn sees_every_kind_of_change() {
        if !root_or_skip("testkit snapshot self-test", &["ip", "nft"], &[]) {
            return;
        }
        let ns = Netns::new("tks");
        let name = ns.name().to_string();
        let steps: [(&str, &[&str]); 6] = [
            (
                "== ip -o link",
                &[
                    "ip", "link", "add", "kltk0", "type", "veth", "peer", "name", "kltk1",
                ],
            ),
            (
                "== ip -o addr",
                &["ip", "addr", "add", "192.0.2.1/24", "dev", "kltk0"],
            ),
            ("== ip -4 route", &["ip", "link", "set", "kltk0", "up"]),
            (
                "== ip rule",
                &[
                    "ip",
                    "rule",
                    "add",
                    "pref",
                    "100",
                    "from",
                    "192.0.2.0/24",
                    "lookup",
                    "100",
                ],
            ),
            ("== nft", &["nft", "add", "table", "inet", "kltk"]),
            (
                "== net/ipv4/ip_forward",
                &["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"],
            ),
        ];
        for (section, argv) in steps {
            let before = ns.run_inside(root_snapshot);
            let out = crate::netns::exec_in(&name, argv);
            assert!(out.status.success(), "{argv:?}: {}", crate::cmd::text(&out));
            let after = ns.run_inside(root_snapshot);
            let changed: Vec<&str> = before
                .split("\n== ")
                .zip(after.split("\n== "))
                .filter(|(b, a)| b != a)
                .map(|(b, _)| b.lines().next().unwrap_or(""))
                .collect();
            assert!(
                changed
                    .iter()
                    .any(|c| format!("== {c}").starts_with(section) || c.starts_with(section)),
                "{argv:?} did not change {section}: changed {changed:?}"
            );
        }
    }
}
