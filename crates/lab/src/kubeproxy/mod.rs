//! The lab's kube-proxy: Service load balancing as nftables rules in a node's network
//! namespace.
//!
//! [`ruleset`] is a pure function from Services, EndpointSlices and a few node facts to a
//! complete `nft` script; [`apply`] loads such a script inside a network namespace. The
//! script owns exactly one table, `table ip kube-proxy` (the name the real nftables
//! kube-proxy uses), and replaces it atomically: it declares the table, deletes it and
//! defines it again, all in one `nft -f` transaction, so packets never see a half-built
//! table and nothing from an older version survives. Connections that are already
//! tracked keep their NAT bindings across a replacement (they live in conntrack, not in
//! the table).
//!
//! # Layout
//!
//! The structure follows the upstream nftables proxier (`pkg/proxy/nftables`):
//!
//! * base chains `nat-prerouting` (hook prerouting, priority -100 = dstnat: traffic that
//!   enters the node, from pods or other hosts) and `nat-output` (hook output, -100:
//!   processes on the node itself) both jump to `services`;
//! * `services` looks up `ip daddr . meta l4proto . th dport` in the verdict map
//!   `service-ips` (ClusterIPs, external IPs, load-balancer IPs), and
//!   `meta l4proto . th dport` in `service-nodeports` when the destination is in the set
//!   `nodeport-ips` (the node's own addresses);
//! * one `service-…` chain per Service port marks traffic for masquerade when its source
//!   lies outside the Pod CIDR, then picks an endpoint with
//!   `numgen random mod N vmap { 0 : goto endpoint-…, … }`;
//! * one `external-…` chain per Service port that has a NodePort (or external IPs) always
//!   marks for masquerade and continues in the `service-…` chain;
//! * one `endpoint-…` chain per endpoint marks hairpin traffic (source = the endpoint
//!   itself) and does `dnat to IP:port`;
//! * `nat-postrouting` (hook postrouting, priority 100 = srcnat) jumps to `masquerading`,
//!   which masquerades packets carrying the mark bit [`MASQUERADE_MARK`] (and clears it);
//! * Service ports without ready endpoints are listed in `no-endpoint-services` /
//!   `no-endpoint-nodeports`, checked for new connections from filter chains on the
//!   input, forward and output hooks (priority -110, before DNAT) and sent to
//!   `reject-chain` (TCP reset, ICMP port unreachable otherwise), so clients fail at once
//!   instead of waiting for a timeout;
//! * ports of a ClusterIP that no Service defines are rejected too (set `cluster-ips`,
//!   checked after DNAT on the forward hook and on the output hook at priority -90).
//!
//! Names: a Service port chain is `service-HASH-<ns>/<name>/<proto>/<port name>`, an
//! endpoint chain `endpoint-HASH-<ns>/<name>/<proto>/<port name>__<ip>/<port>`, where
//! `HASH` is eight base32 characters of a hash of the rest (so names stay unique and
//! visually distinct even if an odd character had to be replaced).
//!
//! ```text
//! table ip kube-proxy
//! delete table ip kube-proxy
//! table ip kube-proxy {
//!     map service-ips {
//!         type ipv4_addr . inet_proto . inet_service : verdict
//!         elements = { 172.17.16.50 . tcp . 80 : goto service-…-default/web/tcp/http }
//!     }
//!     …
//!     chain service-…-default/web/tcp/http {
//!         ip daddr 172.17.16.50 tcp dport 80 ip saddr != 172.17.32.0/19 jump mark-for-masquerade
//!         numgen random mod 2 vmap { 0 : goto endpoint-…, 1 : goto endpoint-… }
//!     }
//!     chain endpoint-…-default/web/tcp/http__172.17.33.10/8080 {
//!         ip saddr 172.17.33.10 jump mark-for-masquerade
//!         meta l4proto tcp dnat to 172.17.33.10:8080
//!     }
//! }
//! ```
//!
//! # Semantics and limits
//!
//! * Endpoints come from the EndpointSlices labelled `kubernetes.io/service-name` in the
//!   Service's namespace, of address type `IPv4`; an endpoint counts when its `ready`
//!   condition is true or unset, and its first address is used (the API says all
//!   addresses of an endpoint are interchangeable). A slice port is matched to a Service
//!   port by name and protocol; its number is the target port. Duplicates across slices
//!   are merged.
//! * TCP and UDP only (SCTP ports are skipped); IPv4 only (IPv6 cluster IPs, slices and
//!   addresses are skipped). Headless and ExternalName Services get no rules.
//! * NodePorts (types NodePort and LoadBalancer) answer on the addresses in
//!   [`ProxyInput::node_ips`]. As upstream, `127.0.0.1:<nodePort>` is not served.
//! * Not implemented: traffic policies (`Local` is treated as `Cluster`), session
//!   affinity, `loadBalancerSourceRanges`, the fallback to serving-but-terminating
//!   endpoints, and flushing stale UDP conntrack entries when endpoints change.
//! * The routing decision for a node-local process happens before the `output` hook, so
//!   `curl <ClusterIP>` on a node works only if the node has some route covering the
//!   Service CIDR (normally its default route). Likewise, for traffic forwarded through a
//!   node the reject for Services without endpoints happens on the forward hook, which a
//!   packet reaches only if the node can route the ClusterIP; without such a route the
//!   kernel answers "unreachable" itself, which fails just as fast.

mod nft;
mod rules;
#[cfg(test)]
mod tests;

pub use nft::{ProxyError, apply};
pub use rules::{MASQUERADE_MARK, ProxyInput, TABLE, remove_script, ruleset};
