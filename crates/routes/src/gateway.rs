//! Which address the routes point at: `--gateway` as given, else this host's one address
//! (per family) inside `--lan`, else none when only DNS formats are printed. Pure: the
//! caller reads the host's addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::local::LocalAddr;

/// The gateway's addresses and how they were chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayChoice {
    /// The IPv4 next hop.
    pub v4: Option<Ipv4Addr>,
    /// The IPv6 next hop.
    pub v6: Option<Ipv6Addr>,
    /// How: `--gateway`, `this host's address in --lan 10.4.7.0/24`, `none (DNS only)`.
    pub how: String,
}

/// Why no gateway could be chosen; each message names the flag that fixes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// Neither `--gateway` nor `--lan`, and a format needs a next hop.
    #[error(
        "pass --gateway IP: the LAN address of the host that runs `kubelan gateway` (the routes point there), or --lan CIDR to use this host's address in that LAN"
    )]
    NotGiven,
    /// `--lan` without the host's addresses.
    #[error(
        "this host's addresses could not be read to find the gateway in --lan; pass --gateway IP"
    )]
    AddressesUnknown,
    /// No address of this host lies in `--lan`.
    #[error(
        "no address of this host lies in --lan {lans}, so it is not the gateway; pass --gateway IP (the LAN address of the host that runs `kubelan gateway`)"
    )]
    NotInLan {
        /// The `--lan` networks, comma-separated.
        lans: String,
    },
    /// Several addresses of one family lie in `--lan`.
    #[error(
        "several addresses of this host lie in --lan {lans} ({addrs}); pass --gateway IP to pick one"
    )]
    Several {
        /// The `--lan` networks, comma-separated.
        lans: String,
        /// The addresses, comma-separated.
        addrs: String,
    },
}

/// The gateway for `given` (`--gateway`, at most one per family, checked by the caller),
/// `lan` (`--lan`) and this host's addresses (`None`: they could not be read); `needed`
/// when a printed format routes through it.
///
/// # Errors
/// [`GatewayError`] when a needed gateway cannot be told.
pub fn choose_gateway(
    given: &[IpAddr],
    lan: &[IpNet],
    addrs: Option<&[LocalAddr]>,
    needed: bool,
) -> Result<GatewayChoice, GatewayError> {
    let mut v4 = None;
    let mut v6 = None;
    if !given.is_empty() {
        for gw in given {
            match gw {
                IpAddr::V4(a) => v4 = Some(*a),
                IpAddr::V6(a) => v6 = Some(*a),
            }
        }
        return Ok(GatewayChoice {
            v4,
            v6,
            how: "--gateway".into(),
        });
    }
    if lan.is_empty() {
        if needed {
            return Err(GatewayError::NotGiven);
        }
        return Ok(GatewayChoice {
            v4: None,
            v6: None,
            how: "none (DNS only)".into(),
        });
    }
    let addrs = addrs.ok_or(GatewayError::AddressesUnknown)?;
    let inside: Vec<IpAddr> = addrs
        .iter()
        .map(|a| a.net.addr())
        .filter(|ip| !ip.is_loopback())
        .filter(|ip| lan.iter().any(|l| l.contains(ip)))
        .collect();
    let lans = lan
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if inside.is_empty() {
        return Err(GatewayError::NotInLan { lans });
    }
    for family_v4 in [true, false] {
        let of: Vec<&IpAddr> = inside
            .iter()
            .filter(|ip| ip.is_ipv4() == family_v4)
            .collect();
        if of.len() > 1 {
            return Err(GatewayError::Several {
                lans,
                addrs: of
                    .iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        match of.first() {
            Some(IpAddr::V4(a)) => v4 = Some(*a),
            Some(IpAddr::V6(a)) => v6 = Some(*a),
            None => {}
        }
    }
    Ok(GatewayChoice {
        v4,
        v6,
        how: format!("this host's address in --lan {lans}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(dev: &str, net: &str) -> LocalAddr {
        LocalAddr {
            dev: dev.into(),
            net: net.parse().unwrap(),
        }
    }

    fn lan(s: &str) -> Vec<IpNet> {
        vec![s.parse().unwrap()]
    }

    #[test]
    fn given_wins_then_this_hosts_one_address_in_the_lan() {
        let given = ["10.4.7.11".parse().unwrap(), "fd00::11".parse().unwrap()];
        let c = choose_gateway(&given, &[], None, true).unwrap();
        assert_eq!(
            (c.v4, c.v6, c.how.as_str()),
            (
                Some("10.4.7.11".parse().unwrap()),
                Some("fd00::11".parse().unwrap()),
                "--gateway"
            )
        );
        let addrs = [addr("lo", "127.0.0.1/8"), addr("eth1", "172.16.0.2/16")];
        let c = choose_gateway(&[], &lan("172.16.0.0/16"), Some(&addrs), true).unwrap();
        assert_eq!(c.v4, Some("172.16.0.2".parse().unwrap()));
        assert_eq!(c.how, "this host's address in --lan 172.16.0.0/16");
        let c = choose_gateway(&[], &[], None, false).unwrap();
        assert_eq!((c.v4, c.how.as_str()), (None, "none (DNS only)"));
    }

    #[test]
    fn each_failure_names_its_flag() {
        assert_eq!(
            choose_gateway(&[], &[], None, true),
            Err(GatewayError::NotGiven)
        );
        assert_eq!(
            choose_gateway(&[], &lan("172.16.0.0/16"), None, true),
            Err(GatewayError::AddressesUnknown)
        );
        let addrs = [addr("eth0", "10.4.7.11/24")];
        let e = choose_gateway(&[], &lan("172.16.0.0/16"), Some(&addrs), true).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no address of this host lies in --lan 172.16.0.0/16, so it is not the gateway; pass --gateway IP (the LAN address of the host that runs `kubelan gateway`)"
        );
        let addrs = [addr("eth1", "172.16.0.2/16"), addr("eth2", "172.16.9.9/16")];
        let e = choose_gateway(&[], &lan("172.16.0.0/16"), Some(&addrs), true).unwrap_err();
        assert_eq!(
            e.to_string(),
            "several addresses of this host lie in --lan 172.16.0.0/16 (172.16.0.2, 172.16.9.9); pass --gateway IP to pick one"
        );
    }
}
