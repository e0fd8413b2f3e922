//! Entry points shared by the cargo-fuzz targets (`fuzz/fuzz_targets/resolv_conf.rs`,
//! `fuzz/fuzz_targets/hosts_block.rs`) and the corpus replay test
//! (`crates/kubelan/tests/fuzz_corpus.rs`). Pure: no file is read or written. Each must
//! return normally for any input; a panic is a bug.

use crate::dns::ResolvConf;
use crate::hosts::{self, HostsEntry};

/// A resolv.conf as found on the host (anything an administrator, NetworkManager,
/// netconfig or a VPN client wrote): [`ResolvConf::parse_bytes`].
///
/// Everything kept must come from the text, and on Linux the file kubelan writes in its
/// place must parse back to the same search domains (plan's first, no duplicates),
/// `options` and `sortlist` lines, and to kubelan's nameservers only.
pub fn resolv_conf(data: &[u8]) {
    let conf = ResolvConf::parse_bytes(data);
    let text = String::from_utf8_lossy(data);
    assert_eq!(
        ResolvConf::parse(&text),
        conf,
        "parse_bytes differs from parse"
    );
    let lines = text.lines().count();
    assert!(
        conf.nameservers.len() <= lines,
        "more nameservers than lines"
    );
    for d in &conf.search {
        assert!(!d.is_empty() && text.contains(d.as_str()), "search {d:?}");
        assert!(!d.contains(char::is_whitespace), "search {d:?}");
        assert!(!d.starts_with(['#', ';']), "comment kept as search {d:?}");
    }
    for (keyword, kept) in [("options", &conf.options), ("sortlist", &conf.sortlist)] {
        for line in kept {
            assert!(line.starts_with(keyword), "{keyword} line {line:?}");
            assert_eq!(line.trim(), line, "untrimmed line {line:?}");
            assert!(text.contains(line.as_str()), "{keyword} line {line:?}");
        }
    }
    #[cfg(target_os = "linux")]
    rendered_round_trip(&conf);
}

#[cfg(target_os = "linux")]
fn rendered_round_trip(conf: &ResolvConf) {
    let plan = crate::dns::DnsPlan {
        link: "kubelan0".into(),
        servers: vec![
            [10, 250, 0, 2].into(),
            "fd00:6b6c::2".parse().expect("address"),
        ],
        routing_domains: vec!["cluster.local".into()],
        search: vec![
            "default.svc.cluster.local".into(),
            "svc.cluster.local".into(),
            "cluster.local".into(),
        ],
    };
    let written = crate::dns::render_resolv_conf(conf, &plan, "connect", 4242);
    let again = ResolvConf::parse(&written);
    assert_eq!(
        again.nameservers, plan.servers,
        "nameservers of {written:?}"
    );
    let mut search: Vec<String> = Vec::new();
    for d in plan.search.iter().chain(&conf.search) {
        if !search.contains(d) {
            search.push(d.clone());
        }
    }
    assert_eq!(again.search, search, "search of {written:?}");
    assert_eq!(again.options, conf.options, "options of {written:?}");
    assert_eq!(again.sortlist, conf.sortlist, "sortlist of {written:?}");
    // Rendering what was rendered changes nothing but the header.
    let twice = crate::dns::render_resolv_conf(&again, &plan, "connect", 4242);
    assert_eq!(twice, written, "rendering is not idempotent");
}

/// A hosts file with any content, and a block marker: the first input byte is the marker's
/// length, the marker follows, the rest is the file.
///
/// Adding a block and removing it again must give back the byte-identical file, also
/// after the block was updated; lines someone appended after the block stay. A file that
/// already has the block is only ever changed inside it.
pub fn hosts_block(data: &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (marker, original) = rest.split_at(usize::from(n).min(rest.len()));
    let marker = String::from_utf8_lossy(marker);
    let entries = [
        HostsEntry {
            ip: [127, 1, 0, 1].into(),
            names: vec!["web.default.svc.cluster.local".into(), "web.default".into()],
        },
        HostsEntry {
            ip: "fd00::1".parse().expect("address"),
            names: vec!["db.default".into()],
        },
    ];
    let block = hosts::render_block(&marker, &entries);
    let updated = hosts::render_block(&marker, &entries[1..]);

    if let Some((start, end)) = hosts::find(original, &marker) {
        // add_block refuses; update_block changes only the block.
        assert!(start < end && end <= original.len());
        let new = hosts::replace(original, &marker, &updated).expect("the block is there");
        assert_eq!(
            new[..start],
            original[..start],
            "bytes before the block changed"
        );
        assert_eq!(
            new[new.len() - (original.len() - end)..],
            original[end..],
            "bytes after the block changed"
        );
        let _ = hosts::remove(original, &marker, true);
        let _ = hosts::remove(original, &marker, false);
        return;
    }
    for separator in [false, true] {
        assert!(hosts::remove(original, &marker, separator).is_none());
    }
    if hosts::check(&marker, &entries).is_err() {
        return;
    }
    let (with, separator) = hosts::insert(original, &block);
    let (start, end) = hosts::find(&with, &marker).expect("the added block is found");
    assert_eq!(&with[start..end], block.as_bytes(), "found another block");
    assert_eq!(
        hosts::remove(&with, &marker, separator).as_deref(),
        Some(original),
        "removing the block did not restore the file"
    );
    // Updated (Services came and went), then removed.
    let new = hosts::replace(&with, &marker, &updated).expect("the block is there");
    assert_eq!(
        hosts::remove(&new, &marker, separator).as_deref(),
        Some(original),
        "removing the updated block did not restore the file"
    );
    // Someone appended a line after the block: it stays, after the original.
    let mut later = with.clone();
    later.extend_from_slice(b"10.0.0.1\tadded-later\n");
    let mut expected = original.to_vec();
    if separator {
        expected.push(b'\n');
    }
    expected.extend_from_slice(b"10.0.0.1\tadded-later\n");
    assert_eq!(
        hosts::remove(&later, &marker, separator),
        Some(expected),
        "lines after the block were not kept"
    );
}

/// A route message from the kernel's route cache dump (`ip route show cache`), as
/// [`crate::net::redirects`] reads it: any bytes either fail to parse or map to at most
/// one redirect, which exists only for messages flagged `RTCF_REDIRECTED` and names the
/// message's own gateway.
#[cfg(target_os = "linux")]
pub fn route_cache(data: &[u8]) {
    use netlink_packet_route::route::RouteMessage;
    use rtnetlink::packet_core::Parseable;
    let Ok(msg) = RouteMessage::parse(data) else {
        return;
    };
    crate::net::check_redirect_of(&msg);
}

/// Nothing to check where there is no netlink.
#[cfg(not(target_os = "linux"))]
pub fn route_cache(_data: &[u8]) {}
