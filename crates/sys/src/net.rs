//! Links, addresses and routes over rtnetlink (Linux).
//!
//! Every function opens its own netlink socket, so it acts on the network namespace of the
//! calling thread (a netlink socket belongs to the namespace it was created in). Changes here
//! are not journaled by themselves: modes add routes through
//! [`HostGuard::apply`](crate::journal::HostGuard::apply), which records them first. Routes
//! are added to the main table with protocol `static`, and deleted only when they match that
//! protocol, so a route the administrator added by hand (`proto boot`) is never removed.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use futures::channel::mpsc::UnboundedReceiver;
use ipnet::IpNet;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType, RouteVia,
};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};
use serde::Serialize;

pub use crate::error::NetError;
use crate::journal::record::{Change, Outcome};
pub use kubelan_routes::{LocalAddr, LocalRoute};

impl NetError {
    /// The kernel's errno, when the kernel refused the request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Kernel { source, .. } | Self::Socket(source) => source.raw_os_error(),
            _ => None,
        }
    }

    /// Whether the route or address already exists (`EEXIST`).
    pub fn is_already_exists(&self) -> bool {
        self.errno() == Some(nix::errno::Errno::EEXIST as i32)
    }

    fn from_rtnl(op: String, e: rtnetlink::Error) -> Self {
        match e {
            rtnetlink::Error::NetlinkError(msg) => {
                let source = msg.to_io();
                let hint = hint(source.raw_os_error().unwrap_or(0));
                Self::Kernel { op, source, hint }
            }
            other => Self::Reply {
                op,
                detail: other.to_string(),
            },
        }
    }
}

fn hint(errno: i32) -> &'static str {
    use nix::errno::Errno;
    match Errno::from_raw(errno) {
        Errno::EPERM | Errno::EACCES => " (needs root or CAP_NET_ADMIN)",
        Errno::EEXIST => " (it already exists; see `ip route show table all` / `ip addr`)",
        Errno::ENETUNREACH => " (the gateway is not directly reachable through that interface)",
        Errno::ESRCH => " (no such route)",
        Errno::ENODEV => " (the interface is gone)",
        _ => "",
    }
}

fn errno_of(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => Some(msg.raw_code().abs()),
        _ => None,
    }
}

/// What kind of route an entry is (`ip route`'s type column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteKind {
    /// Unknown.
    Unspec,
    /// A gateway or direct route.
    Unicast,
    /// Accepted locally (the `local` table).
    Local,
    /// Accepted locally as broadcast.
    Broadcast,
    /// Accepted locally as broadcast, sent as unicast.
    Anycast,
    /// Multicast.
    Multicast,
    /// Silently dropped.
    Blackhole,
    /// Answered with "unreachable".
    Unreachable,
    /// Answered with "prohibited".
    Prohibit,
    /// Continue lookup in the next table.
    Throw,
    /// Network address translation (obsolete).
    Nat,
    /// Anything else (the raw type number).
    Other(u8),
}

impl From<RouteType> for RouteKind {
    fn from(t: RouteType) -> Self {
        match t {
            RouteType::Unspec => Self::Unspec,
            RouteType::Unicast => Self::Unicast,
            RouteType::Local => Self::Local,
            RouteType::Broadcast => Self::Broadcast,
            RouteType::Anycast => Self::Anycast,
            RouteType::Multicast => Self::Multicast,
            RouteType::BlackHole => Self::Blackhole,
            RouteType::Unreachable => Self::Unreachable,
            RouteType::Prohibit => Self::Prohibit,
            RouteType::Throw => Self::Throw,
            RouteType::Nat => Self::Nat,
            other => Self::Other(u8::from(other)),
        }
    }
}

impl fmt::Display for RouteKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Self::Unspec => "unspec",
            Self::Unicast => "unicast",
            Self::Local => "local",
            Self::Broadcast => "broadcast",
            Self::Anycast => "anycast",
            Self::Multicast => "multicast",
            Self::Blackhole => "blackhole",
            Self::Unreachable => "unreachable",
            Self::Prohibit => "prohibit",
            Self::Throw => "throw",
            Self::Nat => "nat",
            Self::Other(n) => return write!(f, "type {n}"),
        };
        f.write_str(s)
    }
}

/// One route of the kernel's routing tables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteEntry {
    /// Destination prefix (`0.0.0.0/0` / `::/0` for a default route).
    pub dst: IpNet,
    /// Output interface.
    pub dev: Option<String>,
    /// Next hop.
    pub gateway: Option<IpAddr>,
    /// Routing table (254 main, 255 local).
    pub table: u32,
    /// Who installed it (`RTPROT_*`: 2 kernel, 3 boot, 4 static, 16 dhcp, ...); see
    /// [`protocol_name`](Self::protocol_name).
    pub protocol: u8,
    /// Route type.
    pub kind: RouteKind,
    /// Metric (priority), when set.
    pub metric: Option<u32>,
}

impl RouteEntry {
    /// `ip route`'s name for [`protocol`](Self::protocol).
    pub fn protocol_name(&self) -> String {
        protocol_name(self.protocol)
    }
}

impl fmt::Display for RouteEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind != RouteKind::Unicast {
            write!(f, "{} ", self.kind)?;
        }
        write!(f, "{}", self.dst)?;
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        if let Some(dev) = &self.dev {
            write!(f, " dev {dev}")?;
        }
        if self.table != u32::from(RouteHeader::RT_TABLE_MAIN) {
            write!(f, " table {}", table_name(self.table))?;
        }
        write!(f, " proto {}", self.protocol_name())?;
        if let Some(m) = self.metric {
            write!(f, " metric {m}")?;
        }
        Ok(())
    }
}

fn protocol_name(p: u8) -> String {
    match p {
        0 => "unspec".into(),
        1 => "redirect".into(),
        2 => "kernel".into(),
        3 => "boot".into(),
        4 => "static".into(),
        8 => "gated".into(),
        9 => "ra".into(),
        10 => "mrt".into(),
        11 => "zebra".into(),
        12 => "bird".into(),
        16 => "dhcp".into(),
        42 => "babel".into(),
        186 => "bgp".into(),
        188 => "ospf".into(),
        other => other.to_string(),
    }
}

fn table_name(t: u32) -> String {
    match t {
        253 => "default".into(),
        254 => "main".into(),
        255 => "local".into(),
        other => other.to_string(),
    }
}

/// Where the kernel would send a packet to one address (`ip route get`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteLookup {
    /// The address looked up.
    pub dst: IpAddr,
    /// Output interface.
    pub dev: Option<String>,
    /// Next hop, when not on-link.
    pub gateway: Option<IpAddr>,
    /// Source address the kernel would pick.
    pub source: Option<IpAddr>,
    /// Table the route came from.
    pub table: u32,
    /// Route type (`local` for one of our own addresses).
    pub kind: RouteKind,
}

/// One address on one interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddrEntry {
    /// Interface name.
    pub link: String,
    /// Address and prefix length.
    pub net: IpNet,
}

/// An open netlink connection whose driver task ends with it.
struct Conn {
    handle: Handle,
    task: tokio::task::JoinHandle<()>,
    _unsolicited: UnboundedReceiver<(
        rtnetlink::packet_core::NetlinkMessage<netlink_packet_route::RouteNetlinkMessage>,
        rtnetlink::sys::SocketAddr,
    )>,
}

impl Conn {
    /// Opens a socket in the calling thread's network namespace.
    fn open() -> Result<Self, NetError> {
        let (conn, handle, unsolicited) = rtnetlink::new_connection().map_err(NetError::Socket)?;
        Ok(Self {
            handle,
            task: tokio::spawn(conn),
            _unsolicited: unsolicited,
        })
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn check_name(name: &str) -> Result<(), NetError> {
    // IFNAMSIZ is 16 including the terminating NUL.
    if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\0']) {
        return Err(NetError::Invalid {
            op: format!("look up link {name:?}"),
            reason: "not a valid interface name (1 to 15 bytes, no '/' or spaces)".into(),
        });
    }
    Ok(())
}

async fn index_on(handle: &Handle, name: &str) -> Result<u32, NetError> {
    check_name(name)?;
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(msg.header.index),
        Ok(None) => Err(NetError::NoSuchLink { name: name.into() }),
        Err(e) if errno_of(&e) == Some(nix::errno::Errno::ENODEV as i32) => {
            Err(NetError::NoSuchLink { name: name.into() })
        }
        Err(e) => Err(NetError::from_rtnl(format!("look up link {name}"), e)),
    }
}

async fn link_names(handle: &Handle) -> Result<HashMap<u32, String>, NetError> {
    let mut names = HashMap::new();
    let mut links = handle.link().get().execute();
    while let Some(msg) = links
        .try_next()
        .await
        .map_err(|e| NetError::from_rtnl("list links".into(), e))?
    {
        for attr in &msg.attributes {
            if let LinkAttribute::IfName(n) = attr {
                names.insert(msg.header.index, n.clone());
            }
        }
    }
    Ok(names)
}

/// The interface index of `name`.
///
/// # Errors
/// [`NetError::NoSuchLink`] when there is no such interface.
pub async fn link_index(name: &str) -> Result<u32, NetError> {
    index_on(&Conn::open()?.handle, name).await
}

/// Sets `name` up, and its MTU when given.
///
/// # Errors
/// When the link is missing or the kernel refuses (an MTU out of range).
pub async fn link_up(name: &str, mtu: Option<u32>) -> Result<(), NetError> {
    let conn = Conn::open()?;
    let index = index_on(&conn.handle, name).await?;
    let mut msg = LinkUnspec::new_with_index(index).up();
    if let Some(mtu) = mtu {
        msg = msg.mtu(mtu);
    }
    let op = match mtu {
        Some(m) => format!("set link {name} up with mtu {m}"),
        None => format!("set link {name} up"),
    };
    conn.handle
        .link()
        .set(msg.build())
        .execute()
        .await
        .map_err(|e| NetError::from_rtnl(op, e))
}

/// Deletes the link with `index` (`name` is for messages).
async fn link_del_index(handle: &Handle, index: u32, name: &str) -> Result<(), NetError> {
    handle
        .link()
        .del(index)
        .execute()
        .await
        .map_err(|e| NetError::from_rtnl(format!("delete link {name}"), e))
}

/// Adds `net` (address and prefix length) to `link`.
///
/// # Errors
/// When the link is missing, or the address exists ([`NetError::is_already_exists`]).
pub async fn addr_add(link: &str, net: IpNet) -> Result<(), NetError> {
    let conn = Conn::open()?;
    let index = index_on(&conn.handle, link).await?;
    conn.handle
        .address()
        .add(index, net.addr(), net.prefix_len())
        .execute()
        .await
        .map_err(|e| NetError::from_rtnl(format!("add address {net} to {link}"), e))
}

/// Every address of every interface, IPv4 and IPv6.
///
/// # Errors
/// When the kernel cannot be asked.
pub async fn addresses() -> Result<Vec<AddrEntry>, NetError> {
    let conn = Conn::open()?;
    let names = link_names(&conn.handle).await?;
    let mut out = Vec::new();
    let mut addrs = conn.handle.address().get().execute();
    while let Some(msg) = addrs
        .try_next()
        .await
        .map_err(|e| NetError::from_rtnl("list addresses".into(), e))?
    {
        // For IPv4, IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer on
        // point-to-point links); IPv6 has only IFA_ADDRESS.
        let mut local = None;
        let mut address = None;
        for attr in &msg.attributes {
            match attr {
                AddressAttribute::Local(ip) => local = Some(*ip),
                AddressAttribute::Address(ip) => address = Some(*ip),
                _ => {}
            }
        }
        let Some(ip) = local.or(address) else {
            continue;
        };
        let Ok(net) = IpNet::new(ip, msg.header.prefix_len) else {
            continue;
        };
        out.push(AddrEntry {
            link: names
                .get(&msg.header.index)
                .cloned()
                .unwrap_or_else(|| format!("if{}", msg.header.index)),
            net,
        });
    }
    Ok(out)
}

fn describe(dst: IpNet, gateway: Option<IpAddr>, dev: &str) -> String {
    match gateway {
        Some(gw) => format!("{dst} via {gw} dev {dev}"),
        None => format!("{dst} dev {dev}"),
    }
}

/// Builds the message for adding or deleting one main-table route.
fn route_message(
    op: &str,
    dst: IpNet,
    gateway: Option<IpAddr>,
    index: u32,
    dev: &str,
    delete: bool,
) -> Result<RouteMessage, NetError> {
    let invalid = |reason: String| NetError::Invalid {
        op: format!("{op} route {}", describe(dst, gateway, dev)),
        reason,
    };
    if dst != dst.trunc() {
        return Err(invalid(format!(
            "{dst} has host bits set; did you mean {}?",
            dst.trunc()
        )));
    }
    let mut builder = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(dst.addr(), dst.prefix_len())
        .map_err(|e| invalid(e.to_string()))?
        .output_interface(index);
    if let Some(gw) = gateway {
        builder = builder.gateway(gw).map_err(|e| invalid(e.to_string()))?;
    }
    let mut msg = builder.build();
    msg.header.protocol = RouteProtocol::Static;
    if delete {
        // The builder's default scope (universe) would only match universe-scope routes;
        // "nowhere" is the kernel's wildcard for deletes (what `ip route del` sends).
        msg.header.scope = RouteScope::NoWhere;
    } else if gateway.is_none() && dst.addr().is_ipv4() {
        // A route straight out of an interface is link-scoped, as `ip route add` makes it.
        msg.header.scope = RouteScope::Link;
    }
    Ok(msg)
}

/// Adds a route to `dst` out of `link` (no gateway: the TUN routes).
///
/// # Errors
/// When the link is missing, `dst` has host bits set, or the kernel refuses (an identical
/// route exists: [`NetError::is_already_exists`]).
pub async fn route_add(dst: IpNet, link: &str) -> Result<(), NetError> {
    let index = link_index(link).await?;
    route_add_index(dst, None, index, link).await
}

/// Adds a route to `dst` via `gateway` on `link` (pins the API server's /32 to the physical
/// path before the tunnel's broader routes go in).
///
/// # Errors
/// As [`route_add`]; also when the gateway is not on-link (`ENETUNREACH`).
pub async fn route_add_via(dst: IpNet, gateway: IpAddr, link: &str) -> Result<(), NetError> {
    let index = link_index(link).await?;
    route_add_index(dst, Some(gateway), index, link).await
}

pub(crate) async fn route_add_index(
    dst: IpNet,
    gateway: Option<IpAddr>,
    index: u32,
    dev: &str,
) -> Result<(), NetError> {
    let msg = route_message("add", dst, gateway, index, dev, false)?;
    let conn = Conn::open()?;
    conn.handle
        .route()
        .add(msg)
        .execute()
        .await
        .map_err(|e| NetError::from_rtnl(format!("add route {}", describe(dst, gateway, dev)), e))
}

/// Deletes the route to `dst` out of `link` that [`route_add`] or [`route_add_via`] added
/// (protocol `static`).
///
/// # Errors
/// When the link is missing or there is no such route (`ESRCH`).
pub async fn route_del(dst: IpNet, link: &str) -> Result<(), NetError> {
    let index = link_index(link).await?;
    route_del_index(dst, None, index, link).await
}

async fn route_del_index(
    dst: IpNet,
    gateway: Option<IpAddr>,
    index: u32,
    dev: &str,
) -> Result<(), NetError> {
    let msg = route_message("delete", dst, gateway, index, dev, true)?;
    let conn = Conn::open()?;
    conn.handle.route().del(msg).execute().await.map_err(|e| {
        NetError::from_rtnl(format!("delete route {}", describe(dst, gateway, dev)), e)
    })
}

fn route_address(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn gateway_of(attrs: &[RouteAttribute]) -> Option<IpAddr> {
    attrs.iter().find_map(|a| match a {
        RouteAttribute::Gateway(g) => route_address(g),
        RouteAttribute::Via(RouteVia::Inet(v4)) => Some(IpAddr::V4(*v4)),
        RouteAttribute::Via(RouteVia::Inet6(v6)) => Some(IpAddr::V6(*v6)),
        _ => None,
    })
}

fn route_entry(msg: &RouteMessage, names: &HashMap<u32, String>) -> Option<RouteEntry> {
    let unspecified = match msg.header.address_family {
        AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    let mut dst = unspecified;
    let mut oif = None;
    let mut table = u32::from(msg.header.table);
    let mut metric = None;
    let mut gateway = gateway_of(&msg.attributes);
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(a) => dst = route_address(a).unwrap_or(unspecified),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Priority(p) => metric = Some(*p),
            RouteAttribute::MultiPath(hops) => {
                // Multipath: report the first next hop.
                if let Some(hop) = hops.first() {
                    oif = oif.or(Some(hop.interface_index));
                    gateway = gateway.or_else(|| gateway_of(&hop.attributes));
                }
            }
            _ => {}
        }
    }
    Some(RouteEntry {
        dst: IpNet::new(dst, msg.header.destination_prefix_length).ok()?,
        dev: oif.map(|i| names.get(&i).cloned().unwrap_or_else(|| format!("if{i}"))),
        gateway,
        table,
        protocol: u8::from(msg.header.protocol),
        kind: msg.header.kind.into(),
        metric,
    })
}

/// Every route of every table, IPv4 and IPv6 (`ip route show table all` plus `ip -6 ...`).
///
/// # Errors
/// When the kernel cannot be asked.
pub async fn routes() -> Result<Vec<RouteEntry>, NetError> {
    let conn = Conn::open()?;
    let names = link_names(&conn.handle).await?;
    let mut out = Vec::new();
    // Without NETLINK_GET_STRICT_CHK the kernel ignores the table in a dump request and
    // returns every table, which is what we want.
    for request in [
        RouteMessageBuilder::<Ipv4Addr>::new().build(),
        RouteMessageBuilder::<Ipv6Addr>::new().build(),
    ] {
        let mut dump = conn.handle.route().get(request).execute();
        while let Some(msg) = dump
            .try_next()
            .await
            .map_err(|e| NetError::from_rtnl("list routes".into(), e))?
        {
            // Without strict checking the kernel adds its cached exceptions (redirects,
            // learned MTUs: `ip route show cache`) to the dump; they are not routes.
            if msg.header.flags.contains(RouteFlags::Cloned) {
                continue;
            }
            out.extend(route_entry(&msg, &names));
        }
    }
    Ok(out)
}

/// Which interface, gateway and source address the kernel would use to reach `dst`
/// (`ip route get`).
///
/// # Errors
/// When there is no route (`ENETUNREACH`) or the kernel cannot be asked.
pub async fn route_get(dst: IpAddr) -> Result<RouteLookup, NetError> {
    let op = format!("look up route to {dst}");
    let host = if dst.is_ipv4() { 32 } else { 128 };
    let request = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(dst, host)
        .map_err(|e| NetError::Invalid {
            op: op.clone(),
            reason: e.to_string(),
        })?
        .build();
    let conn = Conn::open()?;
    let names = link_names(&conn.handle).await?;
    let mut answer = conn.handle.route().get(request).execute();
    let msg = answer
        .try_next()
        .await
        .map_err(|e| NetError::from_rtnl(op.clone(), e))?
        .ok_or_else(|| NetError::Reply {
            op: op.clone(),
            detail: "no answer".into(),
        })?;
    let entry = route_entry(&msg, &names).ok_or_else(|| NetError::Reply {
        op,
        detail: format!("address family {:?}", msg.header.address_family),
    })?;
    let source = msg.attributes.iter().find_map(|a| match a {
        RouteAttribute::PrefSource(s) => route_address(s),
        _ => None,
    });
    Ok(RouteLookup {
        dst,
        dev: entry.dev,
        gateway: entry.gateway,
        source,
        table: entry.table,
        kind: entry.kind,
    })
}

/// This host's main-table unicast routes with an output device, as planning and overlap
/// checks see them; `skip_dev`: leave out the routes through that device (kubelan's own
/// TUN, whose routes are kubelan's, not the host's).
///
/// # Errors
/// When the kernel cannot be asked.
pub async fn local_routes(skip_dev: Option<&str>) -> Result<Vec<LocalRoute>, NetError> {
    Ok(select_local_routes(routes().await?, skip_dev))
}

/// The decision of [`local_routes`]: main table (254), unicast, with a device that is not
/// `skip_dev`.
pub fn select_local_routes(routes: Vec<RouteEntry>, skip_dev: Option<&str>) -> Vec<LocalRoute> {
    routes
        .into_iter()
        .filter(|r| {
            r.table == u32::from(RouteHeader::RT_TABLE_MAIN) && r.kind == RouteKind::Unicast
        })
        .filter_map(|r| {
            let dev = r.dev?;
            (Some(dev.as_str()) != skip_dev).then_some(LocalRoute {
                dst: r.dst,
                dev,
                gateway: r.gateway,
            })
        })
        .collect()
}

/// This host's addresses on every interface but `skip_devs` (e.g. kubelan's TUN and `lo`).
///
/// # Errors
/// When the kernel cannot be asked.
pub async fn local_addrs(skip_devs: &[&str]) -> Result<Vec<LocalAddr>, NetError> {
    Ok(addresses()
        .await?
        .into_iter()
        .filter(|a| !skip_devs.contains(&a.link.as_str()))
        .map(|a| LocalAddr {
            dev: a.link,
            net: a.net,
        })
        .collect())
}

/// Whether one ICMP echo of `payload` bytes with "don't fragment" set reaches `dst` and is
/// answered within 2 s (the `ping` program: `ping -n -c 1 -W 2 -M do -s SIZE`; an
/// unprivileged ICMP socket needs `net.ipv4.ping_group_range`, which `ping` handles).
///
/// # Errors
/// When the `ping` program cannot be run (not installed).
pub async fn ping_unfragmented(dst: IpAddr, payload: u32) -> io::Result<bool> {
    tokio::process::Command::new("ping")
        .args(["-n", "-c", "1", "-W", "2", "-M", "do", "-s"])
        .arg(payload.to_string())
        .arg(dst.to_string())
        .output()
        .await
        .map(|o| o.status.success())
}

/// A next hop this host learned from an ICMP redirect and keeps for a while (what
/// `ip route show cache` marks `<redirected>`): packets to `dst` go to `gateway` instead
/// of the next hop of the routing table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Redirect {
    /// The destination the redirect is for (one address: redirects are per host).
    pub dst: IpAddr,
    /// The next hop the redirect named.
    pub gateway: IpAddr,
    /// Output interface.
    pub dev: Option<String>,
    /// Seconds until the kernel forgets it.
    pub expires_secs: u32,
}

/// `RTCF_REDIRECTED` in `rtm_flags` of a cached route (`include/uapi/linux/in_route.h`).
const RTCF_REDIRECTED: u32 = 0x0004_0000;

/// Clock ticks per second of `rta_expires` (`USER_HZ`, 100 on Linux).
const USER_HZ: u32 = 100;

/// The IPv4 next hops learned from ICMP redirects that this host still uses (the
/// `<redirected>` entries of `ip route show cache`).
///
/// # Errors
/// When the kernel cannot be asked.
pub async fn redirects() -> Result<Vec<Redirect>, NetError> {
    let conn = Conn::open()?;
    let names = link_names(&conn.handle).await?;
    // A dump with RTM_F_CLONED lists the cached exceptions (redirects, learned MTUs)
    // instead of the routes (Linux 5.3 and later; older kernels list nothing).
    let mut request = RouteMessageBuilder::<Ipv4Addr>::new().build();
    request.header.flags = RouteFlags::Cloned;
    let mut dump = conn.handle.route().get(request).execute();
    let mut out = Vec::new();
    while let Some(msg) = dump
        .try_next()
        .await
        .map_err(|e| NetError::from_rtnl("list cached routes".into(), e))?
    {
        out.extend(redirect_of(&msg, &names));
    }
    Ok(out)
}

/// For the fuzz target: [`redirect_of`] on any parsed message keeps its invariants.
#[cfg(any(fuzzing, test, feature = "fuzz"))]
pub(crate) fn check_redirect_of(msg: &RouteMessage) {
    let names = HashMap::from([(2, "eth0".to_string())]);
    if let Some(r) = redirect_of(msg, &names) {
        assert_ne!(msg.header.flags.bits() & RTCF_REDIRECTED, 0, "not flagged");
        assert_eq!(Some(r.gateway), gateway_of(&msg.attributes), "gateway");
    } else if msg.header.flags.bits() & RTCF_REDIRECTED != 0 {
        // Flagged but unusable: no gateway, or a family other than IPv4/IPv6.
        assert!(
            gateway_of(&msg.attributes).is_none() || route_entry(msg, &names).is_none(),
            "a flagged message with a gateway was dropped"
        );
    }
}

/// The redirect a cached route records, if it is one.
fn redirect_of(msg: &RouteMessage, names: &HashMap<u32, String>) -> Option<Redirect> {
    if msg.header.flags.bits() & RTCF_REDIRECTED == 0 {
        return None;
    }
    let entry = route_entry(msg, names)?;
    let expires = msg.attributes.iter().find_map(|a| match a {
        RouteAttribute::CacheInfo(c) => Some(c.expires),
        _ => None,
    });
    Some(Redirect {
        dst: entry.dst.addr(),
        gateway: entry.gateway?,
        dev: entry.dev,
        expires_secs: expires.unwrap_or(0).div_ceil(USER_HZ),
    })
}

/// Undoes [`Change::Link`]: deletes the link if it still exists and is the same link.
pub(crate) async fn undo_link(name: &str, ifindex: Option<u32>, change: &Change) -> Outcome {
    let failed = |reason: String| Outcome::Failed {
        change: change.clone(),
        reason,
    };
    let conn = match Conn::open() {
        Ok(c) => c,
        Err(e) => return failed(e.to_string()),
    };
    let index = match index_on(&conn.handle, name).await {
        Ok(i) => i,
        Err(NetError::NoSuchLink { .. }) => {
            return Outcome::AlreadyGone(format!("link {name} was already gone"));
        }
        Err(e) => return failed(e.to_string()),
    };
    if ifindex.is_some_and(|recorded| recorded != index) {
        return Outcome::AlreadyGone(format!(
            "link {name} was already gone (the name now belongs to another link, left alone)"
        ));
    }
    match link_del_index(&conn.handle, index, name).await {
        Ok(()) => Outcome::Undone(format!("removed link {name}")),
        Err(e) if e.errno() == Some(nix::errno::Errno::ENODEV as i32) => {
            Outcome::AlreadyGone(format!("link {name} was already gone"))
        }
        Err(e) => failed(e.to_string()),
    }
}

/// Undoes [`Change::Route`]: deletes the route; a route whose link is gone (or was
/// replaced by another link of the same name) is already gone.
pub(crate) async fn undo_route(
    dst: IpNet,
    dev: &str,
    gateway: Option<IpAddr>,
    ifindex: Option<u32>,
    change: &Change,
) -> Outcome {
    let what = describe(dst, gateway, dev);
    let index = match link_index(dev).await {
        Ok(i) => i,
        Err(NetError::NoSuchLink { .. }) => {
            return Outcome::AlreadyGone(format!("route {what} was already gone with its link"));
        }
        Err(e) => {
            return Outcome::Failed {
                change: change.clone(),
                reason: e.to_string(),
            };
        }
    };
    if ifindex.is_some_and(|recorded| recorded != index) {
        return Outcome::AlreadyGone(format!(
            "route {what} was already gone with its link ({dev} is now another link)"
        ));
    }
    match route_del_index(dst, gateway, index, dev).await {
        Ok(()) => Outcome::Undone(format!("removed route {what}")),
        Err(e)
            if matches!(
                e.errno().map(nix::errno::Errno::from_raw),
                Some(nix::errno::Errno::ESRCH | nix::errno::Errno::ENOENT)
            ) =>
        {
            Outcome::AlreadyGone(format!("route {what} was already gone"))
        }
        Err(e) => Outcome::Failed {
            change: change.clone(),
            reason: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_routes_are_the_main_tables_unicast_routes_off_our_own_device() {
        let entry = |dst: &str, dev: Option<&str>, table: u32, kind: RouteKind| RouteEntry {
            dst: dst.parse().unwrap(),
            dev: dev.map(String::from),
            gateway: Some("10.4.7.254".parse().unwrap()),
            table,
            protocol: 4,
            kind,
            metric: None,
        };
        let all = vec![
            entry("0.0.0.0/0", Some("eth0"), 254, RouteKind::Unicast),
            entry("172.17.32.0/19", Some("kubelan0"), 254, RouteKind::Unicast),
            entry("10.9.0.0/16", Some("eth0"), 100, RouteKind::Unicast),
            entry("10.4.7.1/32", Some("eth0"), 255, RouteKind::Local),
            entry("192.0.2.0/24", None, 254, RouteKind::Unicast),
            entry("198.51.100.0/24", Some("eth1"), 254, RouteKind::Blackhole),
        ];
        let got = select_local_routes(all.clone(), Some("kubelan0"));
        assert_eq!(
            got,
            vec![LocalRoute {
                dst: "0.0.0.0/0".parse().unwrap(),
                dev: "eth0".into(),
                gateway: Some("10.4.7.254".parse().unwrap()),
            }]
        );
        assert_eq!(select_local_routes(all, None).len(), 2);
    }

    #[test]
    fn messages_name_the_prefix_and_errno() {
        let e = NetError::Kernel {
            op: "add route 172.17.32.0/19 dev kl0".into(),
            source: io::Error::from_raw_os_error(nix::errno::Errno::EPERM as i32),
            hint: hint(nix::errno::Errno::EPERM as i32),
        };
        let s = e.to_string();
        assert!(s.contains("172.17.32.0/19 dev kl0"), "{s}");
        assert!(s.contains("Operation not permitted"), "{s}");
        assert!(s.contains("CAP_NET_ADMIN"), "{s}");
    }

    #[test]
    fn host_bits_are_refused_before_the_kernel_sees_them() {
        let dst: IpNet = "10.1.2.3/8".parse().unwrap();
        let e = route_message("add", dst, None, 1, "kl0", false).unwrap_err();
        assert!(e.to_string().contains("did you mean 10.0.0.0/8"), "{e}");
    }

    #[test]
    fn delete_matches_any_scope_and_only_our_protocol() {
        let dst: IpNet = "10.0.0.0/8".parse().unwrap();
        let add = route_message("add", dst, None, 7, "kl0", false).unwrap();
        assert_eq!(add.header.scope, RouteScope::Link);
        assert_eq!(add.header.protocol, RouteProtocol::Static);
        let del = route_message("delete", dst, None, 7, "kl0", true).unwrap();
        assert_eq!(del.header.scope, RouteScope::NoWhere);
        assert_eq!(del.header.protocol, RouteProtocol::Static);
        let via = route_message(
            "add",
            "192.0.2.1/32".parse().unwrap(),
            Some("10.0.0.1".parse().unwrap()),
            7,
            "eth0",
            false,
        )
        .unwrap();
        assert_eq!(via.header.scope, RouteScope::Universe);
    }

    #[test]
    fn redirected_cache_entries_become_redirects() {
        use netlink_packet_route::route::RouteCacheInfo;
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.destination_prefix_length = 32;
        msg.header.table = 254;
        msg.header.flags = RouteFlags::Cloned | RouteFlags::from_bits_retain(RTCF_REDIRECTED);
        let v4 = |s: &str| RouteAddress::Inet(s.parse().unwrap());
        // clntref, last_use, expires (in 1/100 s), error, used, id, ts, ts_age.
        let raw: Vec<u8> = [0u32, 0, 29_750, 0, 0, 0, 0, 0]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        let cache = RouteCacheInfo::parse(&raw).unwrap();
        msg.attributes = vec![
            RouteAttribute::Destination(v4("172.17.32.2")),
            RouteAttribute::Oif(2),
            RouteAttribute::Gateway(v4("172.16.1.12")),
            RouteAttribute::CacheInfo(cache),
        ];
        let names = HashMap::from([(2, "eth0".to_string())]);
        assert_eq!(
            redirect_of(&msg, &names),
            Some(Redirect {
                dst: "172.17.32.2".parse().unwrap(),
                gateway: "172.16.1.12".parse().unwrap(),
                dev: Some("eth0".into()),
                expires_secs: 298,
            })
        );
        check_redirect_of(&msg);
        // A cached route that is only a learned MTU, not a redirect.
        msg.header.flags = RouteFlags::Cloned;
        assert_eq!(redirect_of(&msg, &names), None);
        check_redirect_of(&msg);
    }

    #[test]
    fn route_kinds_print_like_iproute2() {
        assert_eq!(
            RouteKind::from(RouteType::BlackHole).to_string(),
            "blackhole"
        );
        assert_eq!(protocol_name(4), "static");
    }
}
