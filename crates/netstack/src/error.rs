//! The errors of this layer. Each variant says what went wrong and, where there is one, the fix.

use std::io;
use std::net::SocketAddr;

/// Why opening the TUN device, running the stack or sending on a flow failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetstackError {
    /// The requested interface name cannot be a Linux interface name.
    #[error(
        "{name:?} is not a valid interface name ({reason}); use at most 15 characters without '/', ':' or spaces"
    )]
    InvalidTunName {
        /// The name that was asked for.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// `/dev/net/tun` is missing or the kernel has no tun driver.
    #[error(
        "cannot open /dev/net/tun: the kernel's tun driver is not available (load it with `modprobe tun`; in a container, pass the device with `--device /dev/net/tun`)"
    )]
    TunDriverMissing {
        /// The error of opening the device node.
        #[source]
        source: io::Error,
    },

    /// Creating a TUN device needs `CAP_NET_ADMIN`.
    #[error("not permitted to create TUN device {name:?}: run as root or with CAP_NET_ADMIN")]
    PermissionDenied {
        /// The device that was asked for.
        name: String,
        /// The error the kernel returned.
        #[source]
        source: io::Error,
    },

    /// An interface with the requested name already exists in this network namespace.
    #[error(
        "a network interface named {name:?} already exists; choose another name or remove it (`ip link del {name}`)"
    )]
    NameInUse {
        /// The name that is taken.
        name: String,
    },

    /// Any other failure of creating or configuring the TUN device.
    #[error("cannot create TUN device {name:?}")]
    TunCreate {
        /// The device that was asked for.
        name: String,
        /// The error from the kernel.
        #[source]
        source: io::Error,
    },

    /// The TUN device could not be registered with the tokio reactor.
    #[error(
        "cannot register TUN device {name} with the async runtime (the stack must run inside a tokio runtime with IO enabled)"
    )]
    TunRegister {
        /// The device.
        name: String,
        /// The error from tokio.
        #[source]
        source: io::Error,
    },

    /// Reading from the TUN device failed; the device was probably deleted.
    #[error("reading from TUN device {name} failed (was the interface deleted?)")]
    TunRead {
        /// The device.
        name: String,
        /// The error from the kernel.
        #[source]
        source: io::Error,
    },

    /// Writing to the TUN device failed in a way that will not heal.
    #[error("writing to TUN device {name} failed (was the interface deleted?)")]
    TunWrite {
        /// The device.
        name: String,
        /// The error from the kernel.
        #[source]
        source: io::Error,
    },

    /// The userspace TCP stack (smoltcp) failed or stopped.
    #[error("the userspace TCP stack stopped: {what}")]
    TcpStack {
        /// Which part stopped.
        what: &'static str,
        /// The underlying error, if there was one.
        #[source]
        source: Option<io::Error>,
    },

    /// A task of the stack panicked; this is a bug in kubelan.
    #[error("a task of the network stack panicked ({what}); this is a bug, please report it")]
    TaskPanicked {
        /// Which task.
        what: &'static str,
    },

    /// The stack is no longer running, so nothing can be sent.
    #[error("the network stack is not running any more")]
    StackStopped,

    /// The UDP flow was closed by the stack (idle timeout or eviction); its replies have nowhere to go.
    #[error("UDP flow {src} -> {dst} is closed (idle for too long or evicted)")]
    UdpFlowClosed {
        /// The application's address.
        src: SocketAddr,
        /// The address the application sent to.
        dst: SocketAddr,
    },

    /// A UDP reply does not fit into one IP packet.
    #[error("UDP datagram of {len} bytes does not fit into an IPv4 packet (at most {max} bytes)")]
    DatagramTooLarge {
        /// The payload length.
        len: usize,
        /// The largest payload that fits.
        max: usize,
    },

    /// The address family is not supported by this stack yet.
    #[error("{addr} is an IPv6 address; the stack supports IPv4 only for now")]
    Ipv6Unsupported {
        /// The address.
        addr: std::net::IpAddr,
    },
}
