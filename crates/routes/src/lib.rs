//! `kubelan routes`: what an admin enters on the office router and DNS server so that a
//! whole LAN reaches a Kubernetes cluster through a kubelan gateway.
//!
//! This crate is the sans-IO renderer behind the command: it takes discovered facts
//! ([`RoutesInput`]: the cluster's Pod and Service prefixes with their provenance, the
//! gateway's LAN address, the DNS target and cluster domain, the LAN and this host's
//! other routes) and returns text. Discovery lives in `kubelan-cluster`
//! (`discovery::routes` for this command), reading the host's routes in `kubelan-sys`,
//! and printing in the CLI (`crates/kubelan/src/routes.rs`).
//!
//! - [`render`]: static routes for Linux, Windows, macOS, Cisco IOS, Huawei VRP, H3C
//!   Comware, MikroTik RouterOS and Junos, each prefix pointing at the gateway; DNS
//!   conditional forwarding for dnsmasq, BIND, Unbound, CoreDNS, Windows DNS Server,
//!   systemd-resolved and MikroTik, for the cluster domain and the reverse zones of the
//!   cluster's prefixes ([`zones`] explains which zones a prefix becomes).
//! - [`render_bgp`]: `--bgp`, Calico `BGPConfiguration`/`BGPPeer` manifests that keep the
//!   node-to-node mesh and add the office router as a peer, and the router's side for
//!   Cisco IOS, FRR, MikroTik RouterOS v7 and Junos ([`bgp`]).
//! - [`warnings`] / [`bgp_warnings`]: overlaps with the LAN and this host's routes,
//!   prefixes inside others, guesses, prefixes without a gateway of their family.
//! - The command's checks before anything is read: [`select_formats`] (`--format`) and
//!   [`check_flags`] (flags that cannot work together).
//! - The command's decisions around the renderer, from facts its caller read:
//!   [`choose_gateway`] (`--gateway`, else this host's address in `--lan`),
//!   [`other_routes`] (which host routes may overlap), [`neighbors_of_nodes`] and
//!   [`cluster_as_from_calico`] (`--bgp` without `--bgp-neighbor` / `--cluster-as`).
//!
//! Each block starts with comments in the format's own syntax (what it does, each prefix
//! and where it came from, where to enter it) followed by exactly the lines to enter.
//! IPv6 prefixes get the IPv6 syntax of each static-route format and go to the IPv6
//! gateway; without one they are left out and named in a comment. Rendering never
//! panics: any input, however odd, yields text (at worst only comments).
//!
//! [`PrefixKind`], [`LocalRoute`] and [`LocalAddr`] are the vocabulary the other crates
//! share: `kubelan-sys` reads the host's routes and addresses into them, and
//! `kubelan-cluster`'s discovery plans the routes of `connect` and `gateway` over them.

pub mod bgp;
mod format;
mod gateway;
mod input;
mod local;
mod others;
mod plan;
mod render;
mod request;
mod warnings;
pub mod zones;

pub use bgp::{
    BgpInput, BgpNeighbor, CalicoConfig, DEFAULT_CLUSTER_AS, DEFAULT_ROUTER_AS, SelectorError,
    bgp_warnings, calico_selector, cluster_as_from_calico, neighbors_of_nodes, render_bgp,
    usable_as,
};
pub use format::{BgpFormat, Format, FormatKind, UnknownFormat};
pub use gateway::{GatewayChoice, GatewayError, choose_gateway};
pub use input::{ClusterPrefix, PrefixKind, RoutesInput, valid_domain};
pub use local::{LocalAddr, LocalRoute};
pub use others::other_routes;
pub use render::render;
pub use request::{Flags, RequestError, Selection, check_flags, select_formats};
pub use warnings::{Family, Warning, warnings};
pub use zones::{ReverseZone, ReverseZones, reverse_zones};
