//! Name syntax: normalized names, names relative to the domain, dashed addresses and
//! reverse (`in-addr.arpa`, `ip6.arpa`) names.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Lowercases a name and drops one trailing dot.
pub(super) fn normalize(name: &str) -> String {
    name.trim()
        .strip_suffix('.')
        .unwrap_or(name.trim())
        .to_ascii_lowercase()
}

/// The part of `name` before `.<domain>`: `Some("")` for the domain itself, `None` outside.
pub(super) fn relative<'a>(name: &'a str, domain: &str) -> Option<&'a str> {
    if domain.is_empty() {
        return Some(name);
    }
    if name == domain {
        return Some("");
    }
    name.strip_suffix(domain)?.strip_suffix('.')
}

/// An address with its separators replaced by dashes: `10-244-1-5`, `fd00--5`.
pub(super) fn dashed(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

/// Parses a dashed address (`10-244-1-5`, `fd00--5`).
pub(super) fn parse_dashed(label: &str) -> Option<IpAddr> {
    let parts: Vec<&str> = label.split('-').collect();
    if parts.len() == 4 && parts.iter().all(|p| is_decimal_octet(p)) {
        let octets: Vec<u8> = parts.iter().filter_map(|p| p.parse().ok()).collect();
        let octets: [u8; 4] = octets.try_into().ok()?;
        return Some(IpAddr::V4(Ipv4Addr::from(octets)));
    }
    if label.contains('.') {
        return None;
    }
    label
        .replace('-', ":")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

fn is_decimal_octet(s: &str) -> bool {
    (1..=3).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// The address of a reverse-lookup name (`4.3.2.1.in-addr.arpa`, nibble `ip6.arpa`).
pub(super) fn parse_reverse(name: &str) -> Option<IpAddr> {
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let parts: Vec<&str> = rest.split('.').collect();
        if parts.len() != 4 || !parts.iter().all(|p| is_decimal_octet(p)) {
            return None;
        }
        let mut octets = [0u8; 4];
        for (i, part) in parts.iter().rev().enumerate() {
            octets[i] = part.parse().ok()?;
        }
        return Some(IpAddr::V4(Ipv4Addr::from(octets)));
    }
    let rest = name.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<&str> = rest.split('.').collect();
    if nibbles.len() != 32 {
        return None;
    }
    let mut value: u128 = 0;
    for nibble in nibbles.iter().rev() {
        let mut chars = nibble.chars();
        let (Some(c), None) = (chars.next(), chars.next()) else {
            return None;
        };
        value = (value << 4) | u128::from(c.to_digit(16)?);
    }
    Some(IpAddr::V6(Ipv6Addr::from(value)))
}

/// [`normalize`] for the server module.
pub(crate) fn normalize_name(name: &str) -> String {
    normalize(name)
}

/// Whether `name` is inside the cluster domain `domain` (both normalized).
pub(crate) fn in_domain(name: &str, domain: &str) -> bool {
    relative(name, domain).is_some()
}
