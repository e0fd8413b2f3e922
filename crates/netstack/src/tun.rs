//! Creating the TUN device. Only the device itself: addresses, routes and the link state are
//! the caller's (it uses rtnetlink), so that every host change lives in one place with its guard.

use std::io;

use tun_rs::{DeviceBuilder, Layer, SyncDevice};

use crate::NetstackError;

/// The longest Linux interface name (`IFNAMSIZ` - 1).
const MAX_NAME_LEN: usize = 15;

/// What TUN device to create.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TunConfig {
    /// Interface name, e.g. `kubelan0`. Empty lets the kernel choose (`tun0`, `tun1`, ...).
    pub name: String,
    /// MTU of the interface.
    pub mtu: u16,
    /// Ask the kernel for TCP segmentation offload on the device (`IFF_VNET_HDR` with
    /// `TSO4`/`TSO6`/checksum offload, and UDP segmentation where the kernel has it): the
    /// kernel then hands the stack up to 64 KiB of one TCP flow in one read, and the stack
    /// writes runs of consecutive segments of one flow as one packet that the kernel
    /// segments only if and where it has to (a forwarded super-packet crosses veth and
    /// bridges whole). Default on; when the kernel refuses, the device is opened without.
    pub offload: bool,
}

impl TunConfig {
    /// A device named `name` with MTU `mtu`.
    pub fn new(name: impl Into<String>, mtu: u16) -> Self {
        Self {
            name: name.into(),
            mtu,
            offload: true,
        }
    }
}

/// An open TUN device (layer 3, no packet information header). It is not persistent: the
/// interface disappears when this value, or the stack running on it, is dropped, and also
/// when the process dies.
pub struct Tun {
    pub(crate) device: SyncDevice,
    name: String,
    index: u32,
    mtu: u16,
    offload: bool,
}

impl std::fmt::Debug for Tun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tun")
            .field("name", &self.name)
            .field("index", &self.index)
            .field("mtu", &self.mtu)
            .field("offload", &self.offload)
            .finish_non_exhaustive()
    }
}

impl Tun {
    /// The interface's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interface index (what rtnetlink calls the link), valid in the network namespace
    /// the device was created in.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The MTU the device was created with.
    pub fn mtu(&self) -> u16 {
        self.mtu
    }

    /// Whether the device has TCP segmentation offload (see [`TunConfig::offload`]).
    pub fn offload(&self) -> bool {
        self.offload
    }
}

/// Creates a TUN device in the calling thread's network namespace, without addresses and
/// without changing its link state (it starts down); the caller adds addresses and routes
/// and sets the link up.
///
/// # Errors
///
/// [`NetstackError::InvalidTunName`] for a name Linux would refuse,
/// [`NetstackError::NameInUse`] when an interface of that name exists,
/// [`NetstackError::TunDriverMissing`] without `/dev/net/tun` (`modprobe tun`),
/// [`NetstackError::PermissionDenied`] without `CAP_NET_ADMIN`, and
/// [`NetstackError::TunCreate`] for anything else.
pub fn open_tun(cfg: &TunConfig) -> Result<Tun, NetstackError> {
    let name = cfg.name.as_str();
    if !name.is_empty() {
        validate_name(name)?;
        // TUNSETIFF silently attaches to an existing persistent TUN device of the same name;
        // we want a fresh device that dies with us, so refuse up front. (`thread-self`: the
        // namespace is per thread, and tests run in a namespace entered by one thread.)
        if interface_exists(name) {
            return Err(NetstackError::NameInUse { name: name.into() });
        }
    }

    let device = match build(name, cfg.mtu, cfg.offload) {
        // A kernel without `IFF_VNET_HDR` or the TCP offloads refuses the flags (EINVAL);
        // the device then works as before, one packet per read and write.
        Err(e) if cfg.offload && e.raw_os_error() == Some(libc_errno::EINVAL) => {
            tracing::debug!("TUN offload refused ({e}); opening the device without it");
            build(name, cfg.mtu, false)
        }
        other => other,
    }
    .map_err(|e| create_error(name, e))?;
    let offload = device.tcp_gso();

    let actual_name = device.name().map_err(|source| NetstackError::TunCreate {
        name: name.into(),
        source,
    })?;
    let index = device
        .if_index()
        .map_err(|source| NetstackError::TunCreate {
            name: actual_name.clone(),
            source,
        })?;
    tracing::debug!(name = %actual_name, index, mtu = cfg.mtu, offload, "created TUN device");
    Ok(Tun {
        device,
        name: actual_name,
        index,
        mtu: cfg.mtu,
        offload,
    })
}

/// Asks the kernel for the device.
fn build(name: &str, mtu: u16, offload: bool) -> io::Result<SyncDevice> {
    let mut builder = DeviceBuilder::new()
        .layer(Layer::L3)
        .mtu(mtu)
        .with(|b| {
            b.packet_information(false).offload(offload);
        })
        // Leave the link state alone: no addresses are set here (tun-rs needs none when
        // `ipv4`/`ipv6` are not called), and the caller brings the link up when its
        // addresses and routes are in place.
        .inherit_enable_state();
    if !name.is_empty() {
        builder = builder.name(name);
    }
    builder.build_sync()
}

/// Linux's `dev_valid_name`, so that a bad name gets a clear error instead of `EINVAL`.
fn validate_name(name: &str) -> Result<(), NetstackError> {
    let reason = if name.len() > MAX_NAME_LEN {
        Some("longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("reserved")
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0')
    {
        Some("contains '/', ':', a space or NUL")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(NetstackError::InvalidTunName {
            name: name.into(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Whether the calling thread's network namespace has an interface called `name`.
fn interface_exists(name: &str) -> bool {
    std::fs::read_to_string("/proc/thread-self/net/dev")
        .map(|dev| {
            dev.lines()
                .skip(2)
                .filter_map(|l| l.split_once(':'))
                .any(|(n, _)| n.trim() == name)
        })
        .unwrap_or(false)
}

/// Turns the kernel's answer into an error that names the fix.
fn create_error(name: &str, source: io::Error) -> NetstackError {
    match source.raw_os_error() {
        Some(libc_errno::ENOENT | libc_errno::ENODEV | libc_errno::ENXIO) => {
            NetstackError::TunDriverMissing { source }
        }
        Some(libc_errno::EPERM | libc_errno::EACCES) => NetstackError::PermissionDenied {
            name: name.into(),
            source,
        },
        // EBUSY: a TUN device of that name is attached to another process; EEXIST: raced
        // with another interface of that name.
        Some(libc_errno::EBUSY | libc_errno::EEXIST) => {
            NetstackError::NameInUse { name: name.into() }
        }
        // EINVAL for a named device almost always means a non-TUN interface has the name.
        Some(libc_errno::EINVAL) if !name.is_empty() && interface_exists(name) => {
            NetstackError::NameInUse { name: name.into() }
        }
        _ => NetstackError::TunCreate {
            name: name.into(),
            source,
        },
    }
}

/// The errno values we tell apart (Linux numbering; the same on every Linux architecture).
mod libc_errno {
    pub(super) const EPERM: i32 = 1;
    pub(super) const ENOENT: i32 = 2;
    pub(super) const ENXIO: i32 = 6;
    pub(super) const EACCES: i32 = 13;
    pub(super) const EBUSY: i32 = 16;
    pub(super) const EEXIST: i32 = 17;
    pub(super) const ENODEV: i32 = 19;
    pub(super) const EINVAL: i32 = 22;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated_like_linux() {
        for ok in ["kubelan0", "a", "tun-1.x_y", "123456789012345"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["1234567890123456", ".", "..", "a/b", "a:b", "a b", "a\tb"] {
            assert!(
                matches!(
                    validate_name(bad),
                    Err(NetstackError::InvalidTunName { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn errors_name_the_fix() {
        let e = create_error("kl0", io::Error::from_raw_os_error(libc_errno::EPERM));
        assert!(e.to_string().contains("CAP_NET_ADMIN"), "{e}");
        let e = create_error("kl0", io::Error::from_raw_os_error(libc_errno::ENODEV));
        assert!(e.to_string().contains("modprobe tun"), "{e}");
        let e = create_error("kl0", io::Error::from_raw_os_error(libc_errno::EBUSY));
        assert!(e.to_string().contains("already exists"), "{e}");
    }

    #[test]
    fn loopback_exists() {
        // Every network namespace has `lo`, so this reads the right file.
        assert!(interface_exists("lo"));
        assert!(!interface_exists("kl-no-such-if"));
    }
}
