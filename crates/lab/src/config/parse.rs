//! Reading and writing `lab.toml`: TOML in and out, and the value parsers whose messages
//! point someone editing the file at the fix.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::Path;
use std::str::FromStr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::ConfigError;
use super::{LabConfig, PortRange};

// ---------------------------------------------------------------------------
// Loading and saving
// ---------------------------------------------------------------------------

impl LabConfig {
    /// Reads, parses and validates the configuration file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<LabConfig, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        let config = Self::parse(&text).map_err(|error| ConfigError::Parse {
            path: Some(path.to_owned()),
            error: Box::new(error),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Parses and validates configuration text.
    pub fn from_toml_str(text: &str) -> Result<LabConfig, ConfigError> {
        let config = Self::parse(text).map_err(|error| ConfigError::Parse {
            path: None,
            error: Box::new(error),
        })?;
        config.validate()?;
        Ok(config)
    }

    fn parse(text: &str) -> Result<LabConfig, toml::de::Error> {
        toml::from_str(text)
    }

    /// The configuration as TOML text, complete with every default, suitable
    /// for printing or saving and for reading back with [`LabConfig::load`].
    pub fn to_toml(&self) -> String {
        match toml::to_string_pretty(self) {
            Ok(text) => text,
            // Every field is a string, number, boolean, table or list of
            // tables, all of which TOML can represent.
            Err(error) => unreachable!("a lab config always serializes to TOML: {error}"),
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let syntax = || format!("expected a port range like \"30000-32767\", found {text:?}");
        let (first, last) = text.split_once('-').ok_or_else(syntax)?;
        let port = |part: &str| -> Result<u16, String> {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(syntax());
            }
            part.parse::<u16>().map_err(|_| {
                format!("port {part} in {text:?} is out of range; ports go from 1 to 65535")
            })
        };
        Ok(PortRange {
            first: port(first)?,
            last: port(last)?,
        })
    }
}

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses an IPv4 network, with messages aimed at someone editing `lab.toml`.
pub(super) fn parse_net(text: &str) -> Result<Ipv4Net, String> {
    if let Ok(net) = text.parse::<Ipv4Net>() {
        return Ok(net);
    }
    if text.parse::<ipnet::Ipv6Net>().is_ok() || text.parse::<std::net::Ipv6Addr>().is_ok() {
        return Err(format!(
            "{text:?} is an IPv6 network; IPv6 is not supported yet, use an IPv4 network such as \"10.4.7.0/24\""
        ));
    }
    if let Ok(addr) = text.parse::<Ipv4Addr>() {
        return Err(format!(
            "{text:?} is a single address; write a network with its prefix length, such as \"{addr}/24\""
        ));
    }
    Err(format!(
        "{text:?} is not an IPv4 network; write one in CIDR notation, such as \"10.4.7.0/24\""
    ))
}

/// Parses an IPv4 address, with messages aimed at someone editing `lab.toml`.
pub(super) fn parse_addr(text: &str) -> Result<Ipv4Addr, String> {
    if let Ok(addr) = text.parse::<Ipv4Addr>() {
        return Ok(addr);
    }
    if text.parse::<std::net::Ipv6Addr>().is_ok() || text.parse::<ipnet::Ipv6Net>().is_ok() {
        return Err(format!(
            "{text:?} is an IPv6 address; IPv6 is not supported yet, use an IPv4 address such as \"10.4.7.11\""
        ));
    }
    if let Ok(net) = text.parse::<Ipv4Net>() {
        return Err(format!(
            "{text:?} has a prefix length; write the bare address \"{}\"",
            net.addr()
        ));
    }
    Err(format!(
        "{text:?} is not an IPv4 address; write one such as \"10.4.7.11\""
    ))
}

pub(super) fn deserialize_net<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Ipv4Net, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_net(&text).map_err(serde::de::Error::custom)
}

pub(super) fn deserialize_addr<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Ipv4Addr, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_addr(&text).map_err(serde::de::Error::custom)
}
