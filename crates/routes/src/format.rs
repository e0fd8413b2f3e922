//! The output formats and their names on the command line.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// Whether a format configures routing or DNS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FormatKind {
    /// Static routes on a router or host.
    Routes,
    /// Conditional forwarding on a DNS server or resolver.
    Dns,
}

/// A static-route or DNS format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "&'static str")]
pub enum Format {
    /// Linux (`ip route add`).
    Linux,
    /// Windows (`route -p ADD … MASK …`).
    Windows,
    /// macOS (`route -n add -net …`).
    Macos,
    /// Cisco IOS / IOS XE (`ip route`).
    CiscoIos,
    /// Huawei VRP (`ip route-static`).
    HuaweiVrp,
    /// H3C Comware (`ip route-static`).
    H3cComware,
    /// MikroTik RouterOS (`/ip route add`).
    Mikrotik,
    /// Juniper Junos (`set routing-options static route`).
    Junos,
    /// dnsmasq (`server=/zone/ip`).
    Dnsmasq,
    /// BIND 9 (`zone … { type forward; }`).
    Bind,
    /// Unbound (`forward-zone:`).
    Unbound,
    /// CoreDNS (a server block with `forward`).
    Coredns,
    /// Windows DNS Server (`Add-DnsServerConditionalForwarderZone`).
    WindowsDns,
    /// systemd-resolved (a `resolved.conf.d` drop-in).
    SystemdResolved,
    /// MikroTik RouterOS DNS (`/ip dns static add type=FWD`).
    MikrotikDns,
}

impl Format {
    /// Every format, routes first.
    pub const fn all() -> &'static [Format] {
        &[
            Self::Linux,
            Self::Windows,
            Self::Macos,
            Self::CiscoIos,
            Self::HuaweiVrp,
            Self::H3cComware,
            Self::Mikrotik,
            Self::Junos,
            Self::Dnsmasq,
            Self::Bind,
            Self::Unbound,
            Self::Coredns,
            Self::WindowsDns,
            Self::SystemdResolved,
            Self::MikrotikDns,
        ]
    }

    /// What is printed without `--format`: the routers and DNS servers most offices have.
    pub const fn defaults() -> &'static [Format] {
        &[
            Self::Linux,
            Self::CiscoIos,
            Self::Mikrotik,
            Self::Dnsmasq,
            Self::WindowsDns,
        ]
    }

    /// The name on the command line, e.g. `cisco-ios`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Linux => "linux",
            Self::Windows => "windows",
            Self::Macos => "macos",
            Self::CiscoIos => "cisco-ios",
            Self::HuaweiVrp => "huawei-vrp",
            Self::H3cComware => "h3c-comware",
            Self::Mikrotik => "mikrotik",
            Self::Junos => "junos",
            Self::Dnsmasq => "dnsmasq",
            Self::Bind => "bind",
            Self::Unbound => "unbound",
            Self::Coredns => "coredns",
            Self::WindowsDns => "windows-dns",
            Self::SystemdResolved => "systemd-resolved",
            Self::MikrotikDns => "mikrotik-dns",
        }
    }

    /// A heading, e.g. `Cisco IOS / IOS XE`.
    pub const fn title(self) -> &'static str {
        match self {
            Self::Linux => "Linux router or host (iproute2)",
            Self::Windows => "Windows host (route.exe)",
            Self::Macos => "macOS host (route)",
            Self::CiscoIos => "Cisco IOS / IOS XE",
            Self::HuaweiVrp => "Huawei VRP",
            Self::H3cComware => "H3C Comware",
            Self::Mikrotik => "MikroTik RouterOS (v6 and v7)",
            Self::Junos => "Juniper Junos",
            Self::Dnsmasq => "dnsmasq (also OpenWrt, Pi-hole)",
            Self::Bind => "BIND 9",
            Self::Unbound => "Unbound (also pfSense, OPNsense)",
            Self::Coredns => "CoreDNS",
            Self::WindowsDns => "Windows DNS Server (PowerShell)",
            Self::SystemdResolved => "systemd-resolved",
            Self::MikrotikDns => "MikroTik RouterOS v7 DNS",
        }
    }

    /// Routes or DNS.
    pub const fn kind(self) -> FormatKind {
        match self {
            Self::Linux
            | Self::Windows
            | Self::Macos
            | Self::CiscoIos
            | Self::HuaweiVrp
            | Self::H3cComware
            | Self::Mikrotik
            | Self::Junos => FormatKind::Routes,
            _ => FormatKind::Dns,
        }
    }

    /// The format named `name` (also a few short aliases: `cisco`, `huawei`, `h3c`,
    /// `routeros`, `resolved`, `named`).
    pub fn from_name(name: &str) -> Option<Self> {
        let name = name.trim().to_ascii_lowercase();
        let alias = match name.as_str() {
            "cisco" | "ios" => "cisco-ios",
            "huawei" | "vrp" => "huawei-vrp",
            "h3c" | "comware" => "h3c-comware",
            "routeros" => "mikrotik",
            "juniper" => "junos",
            "named" | "bind9" => "bind",
            "resolved" => "systemd-resolved",
            "darwin" | "osx" => "macos",
            other => other,
        };
        Self::all().iter().copied().find(|f| f.name() == alias)
    }
}

impl From<Format> for &'static str {
    fn from(f: Format) -> Self {
        f.name()
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A format name that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown format {given:?}; one of: {}, or all", .valid.join(", "))]
pub struct UnknownFormat {
    /// What was given.
    pub given: String,
    /// The names that are valid here.
    pub valid: Vec<&'static str>,
}

impl FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_name(s).ok_or_else(|| UnknownFormat {
            given: s.to_string(),
            valid: Self::all().iter().map(|f| f.name()).collect(),
        })
    }
}

/// A format of `--bgp`: the Calico manifests, or a router's BGP configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "&'static str")]
pub enum BgpFormat {
    /// Calico `BGPConfiguration` and `BGPPeer` (YAML).
    Calico,
    /// Cisco IOS / IOS XE `router bgp`.
    CiscoIos,
    /// FRRouting (vtysh), e.g. on a Linux router.
    Frr,
    /// MikroTik RouterOS v7 `/routing bgp connection`.
    Mikrotik,
    /// Juniper Junos `protocols bgp`.
    Junos,
}

impl BgpFormat {
    /// Every BGP format, the cluster side first.
    pub const fn all() -> &'static [BgpFormat] {
        &[
            Self::Calico,
            Self::CiscoIos,
            Self::Frr,
            Self::Mikrotik,
            Self::Junos,
        ]
    }

    /// The name on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Calico => "calico",
            Self::CiscoIos => "cisco-ios",
            Self::Frr => "frr",
            Self::Mikrotik => "mikrotik",
            Self::Junos => "junos",
        }
    }

    /// A heading.
    pub const fn title(self) -> &'static str {
        match self {
            Self::Calico => "Calico (BGPConfiguration and BGPPeer)",
            Self::CiscoIos => "Cisco IOS / IOS XE",
            Self::Frr => "FRRouting (Linux router, vtysh)",
            Self::Mikrotik => "MikroTik RouterOS v7",
            Self::Junos => "Juniper Junos",
        }
    }

    /// The format named `name` (aliases as for [`Format::from_name`], `linux` for FRR).
    pub fn from_name(name: &str) -> Option<Self> {
        let name = name.trim().to_ascii_lowercase();
        let alias = match name.as_str() {
            "cisco" | "ios" => "cisco-ios",
            "linux" | "frrouting" => "frr",
            "routeros" => "mikrotik",
            "juniper" => "junos",
            other => other,
        };
        Self::all().iter().copied().find(|f| f.name() == alias)
    }
}

impl From<BgpFormat> for &'static str {
    fn from(f: BgpFormat) -> Self {
        f.name()
    }
}

impl fmt::Display for BgpFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BgpFormat {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_name(s).ok_or_else(|| UnknownFormat {
            given: s.to_string(),
            valid: Self::all().iter().map(|f| f.name()).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in Format::all() {
            assert_eq!(f.name().parse::<Format>(), Ok(*f));
        }
        for f in BgpFormat::all() {
            assert_eq!(f.name().parse::<BgpFormat>(), Ok(*f));
        }
        assert_eq!("Huawei".parse::<Format>(), Ok(Format::HuaweiVrp));
        assert_eq!("linux".parse::<BgpFormat>(), Ok(BgpFormat::Frr));
        let err = "ciscoo".parse::<Format>().unwrap_err().to_string();
        assert!(
            err.contains("unknown format \"ciscoo\"") && err.contains("cisco-ios"),
            "{err}"
        );
    }
}
