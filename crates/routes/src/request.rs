//! What `kubelan routes` was asked for, checked before anything is read: which formats
//! ([`select_formats`]) and whether the flags can work together ([`check_flags`]).

use std::net::IpAddr;

use crate::bgp::{SelectorError, calico_selector, usable_as};
use crate::format::{BgpFormat, Format, UnknownFormat};
use crate::input::valid_domain;

/// Which formats to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Static routes and DNS forwarders.
    Static(Vec<Format>),
    /// `--bgp`: Calico manifests and the router's BGP configuration.
    Bgp(Vec<BgpFormat>),
}

/// Flags that cannot work, refused before anything is asked; each says the fix.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// A name that is not a format of `--bgp`.
    #[error("--format {name} (with --bgp)")]
    UnknownBgpFormat {
        /// What was given.
        name: String,
        /// Why it is not one.
        #[source]
        source: UnknownFormat,
    },
    /// A format of `--bgp` without `--bgp`.
    #[error("--format {name} is a format of --bgp; add --bgp (or pick a static-route format)")]
    NeedsBgp {
        /// What was given.
        name: String,
    },
    /// A name that is not a static-route or DNS format.
    #[error("--format {name}")]
    UnknownFormat {
        /// What was given.
        name: String,
        /// Why it is not one.
        #[source]
        source: UnknownFormat,
    },
    /// `--cluster-domain` is not a DNS name.
    #[error(
        "--cluster-domain {domain:?} is not a DNS name (labels of letters, digits and '-', separated by dots), e.g. cluster.local"
    )]
    Domain {
        /// What was given.
        domain: String,
    },
    /// A `--gateway` that cannot be a next hop.
    #[error(
        "--gateway {gateway} cannot be a next hop; give the kubelan gateway's address on the LAN"
    )]
    GatewayAddress {
        /// What was given.
        gateway: IpAddr,
    },
    /// More than one `--gateway` of one IP family.
    #[error("--gateway takes one address per IP family (one IPv4, one IPv6)")]
    GatewayPerFamily,
    /// An AS number a BGP session cannot use.
    #[error(
        "AS {asn} cannot be used on a BGP session; pick one from 64512-65534 or 4200000000-4294967294 (--router-as / --cluster-as)"
    )]
    UnusableAs {
        /// The number.
        asn: u32,
    },
    /// The router and the cluster in one AS.
    #[error(
        "--router-as and --cluster-as are both {asn}; the configurations printed are eBGP: give the router its own AS"
    )]
    SameAs {
        /// The number.
        asn: u32,
    },
    /// A `--bgp-nodes` that is not a label selector.
    #[error("--bgp-nodes")]
    BgpNodes(#[source] SelectorError),
}

/// The formats `names` (`--format`, comma-split) asks for, and whether none was given
/// (the default selection, which the output says how to widen).
///
/// # Errors
/// An unknown name, or a format of `--bgp` without it.
pub fn select_formats(names: &[String], bgp: bool) -> Result<(Selection, bool), RequestError> {
    let names: Vec<&str> = names
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    let defaulted = names.is_empty();
    let all = names.iter().any(|n| n.eq_ignore_ascii_case("all"));
    if bgp {
        let formats = if defaulted || all {
            BgpFormat::all().to_vec()
        } else {
            let mut v = Vec::new();
            for n in names {
                let f: BgpFormat = n.parse().map_err(|source| RequestError::UnknownBgpFormat {
                    name: n.to_string(),
                    source,
                })?;
                if !v.contains(&f) {
                    v.push(f);
                }
            }
            v
        };
        return Ok((Selection::Bgp(formats), defaulted));
    }
    let formats = if all {
        Format::all().to_vec()
    } else if defaulted {
        Format::defaults().to_vec()
    } else {
        let mut v = Vec::new();
        for n in names {
            if Format::from_name(n).is_none() && BgpFormat::from_name(n).is_some() {
                return Err(RequestError::NeedsBgp {
                    name: n.to_string(),
                });
            }
            let f: Format = n.parse().map_err(|source| RequestError::UnknownFormat {
                name: n.to_string(),
                source,
            })?;
            if !v.contains(&f) {
                v.push(f);
            }
        }
        v
    };
    Ok((Selection::Static(formats), defaulted))
}

/// The flags [`check_flags`] looks at.
#[derive(Debug, Clone, Default)]
pub struct Flags<'a> {
    /// `--cluster-domain`.
    pub cluster_domain: Option<&'a str>,
    /// `--gateway`.
    pub gateway: &'a [IpAddr],
    /// `--bgp`.
    pub bgp: bool,
    /// `--router-as`.
    pub router_as: u32,
    /// `--cluster-as`.
    pub cluster_as: Option<u32>,
    /// `--bgp-nodes`.
    pub bgp_nodes: Option<&'a str>,
}

/// Refuses flags that cannot work, before anything is asked.
///
/// # Errors
/// The first flag that cannot work, in the order the command line reads.
pub fn check_flags(f: &Flags<'_>) -> Result<(), RequestError> {
    if let Some(d) = f.cluster_domain
        && !valid_domain(d)
    {
        return Err(RequestError::Domain {
            domain: d.to_string(),
        });
    }
    let mut v4 = 0;
    let mut v6 = 0;
    for gw in f.gateway {
        if gw.is_loopback() || gw.is_unspecified() || gw.is_multicast() {
            return Err(RequestError::GatewayAddress { gateway: *gw });
        }
        if gw.is_ipv4() {
            v4 += 1;
        } else {
            v6 += 1;
        }
    }
    if v4 > 1 || v6 > 1 {
        return Err(RequestError::GatewayPerFamily);
    }
    if f.bgp {
        for asn in [Some(f.router_as), f.cluster_as].into_iter().flatten() {
            if !usable_as(asn) {
                return Err(RequestError::UnusableAs { asn });
            }
        }
        if f.cluster_as == Some(f.router_as) {
            return Err(RequestError::SameAs { asn: f.router_as });
        }
        if let Some(sel) = f.bgp_nodes {
            calico_selector(sel).map_err(RequestError::BgpNodes)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_line(e: &dyn std::error::Error) -> String {
        let mut s = e.to_string();
        let mut cur = e.source();
        while let Some(c) = cur {
            s.push_str(&format!(": {c}"));
            cur = c.source();
        }
        s
    }

    #[test]
    fn formats_default_widen_and_refuse_with_the_fix() {
        let (s, defaulted) = select_formats(&[], false).unwrap();
        assert_eq!(s, Selection::Static(Format::defaults().to_vec()));
        assert!(defaulted);
        let (s, defaulted) = select_formats(&["all".into()], false).unwrap();
        assert_eq!(s, Selection::Static(Format::all().to_vec()));
        assert!(!defaulted);
        let names = ["linux".to_string(), " linux ".into(), "".into()];
        let (s, _) = select_formats(&names, false).unwrap();
        assert_eq!(
            s,
            Selection::Static(vec![Format::from_name("linux").unwrap()])
        );
        let (s, defaulted) = select_formats(&[], true).unwrap();
        assert_eq!(s, Selection::Bgp(BgpFormat::all().to_vec()));
        assert!(defaulted);
        let e = select_formats(&["frr".into()], false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--format frr is a format of --bgp; add --bgp (or pick a static-route format)"
        );
        let e = select_formats(&["nope".into()], false).unwrap_err();
        assert!(one_line(&e).starts_with("--format nope: unknown format \"nope\""));
        let e = select_formats(&["nope".into()], true).unwrap_err();
        assert!(one_line(&e).starts_with("--format nope (with --bgp): unknown format"));
    }

    #[test]
    fn flags_that_cannot_work_are_refused() {
        let ok = Flags {
            router_as: 65000,
            ..Flags::default()
        };
        check_flags(&ok).unwrap();
        let gw = ["127.0.0.1".parse().unwrap()];
        let e = check_flags(&Flags {
            gateway: &gw,
            ..ok.clone()
        })
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--gateway 127.0.0.1 cannot be a next hop")
        );
        let gw = ["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()];
        let e = check_flags(&Flags {
            gateway: &gw,
            ..ok.clone()
        })
        .unwrap_err();
        assert!(matches!(e, RequestError::GatewayPerFamily));
        let e = check_flags(&Flags {
            cluster_domain: Some("bad domain"),
            ..ok.clone()
        })
        .unwrap_err();
        assert!(matches!(e, RequestError::Domain { .. }));
        let bgp = Flags {
            bgp: true,
            ..ok.clone()
        };
        check_flags(&bgp).unwrap();
        let e = check_flags(&Flags {
            cluster_as: Some(65000),
            ..bgp.clone()
        })
        .unwrap_err();
        assert!(matches!(e, RequestError::SameAs { asn: 65000 }));
        let e = check_flags(&Flags {
            router_as: 23456,
            ..bgp.clone()
        })
        .unwrap_err();
        assert!(matches!(e, RequestError::UnusableAs { asn: 23456 }));
        let e = check_flags(&Flags {
            bgp_nodes: Some(""),
            ..bgp.clone()
        })
        .unwrap_err();
        assert!(one_line(&e).starts_with("--bgp-nodes: the node selector is empty"));
        // Without --bgp, its flags are not looked at.
        check_flags(&Flags {
            router_as: 23456,
            ..ok
        })
        .unwrap();
    }
}
