//! Guard-and-journal for host changes.
//!
//! Every change kubelan makes to the host is first appended to a journal file in the state
//! directory ([`StateDir`], `/run/kubelan` by default: a tmpfs that disappears at reboot
//! together with the TUN links and routes it describes), and only then made. A
//! [`HostGuard`] owns one journal: [`HostGuard::restore`] undoes its changes in reverse order
//! and deletes the journal, and dropping the guard does the same on a best-effort basis. When
//! the process dies without either (`kill -9`, a panic with `panic = "abort"`, a power cut of
//! the process but not the machine), the journal stays behind: the session's crash watcher
//! ([`crate::watch`]) replays it as soon as its owner is gone, and [`reset`]
//! (`kubelan reset`, and the start of the next `kubelan connect`) does when no watcher did.
//! Replays take the state directory's replay lock, so they never overlap.
//!
//! Undo is idempotent: something that is already gone (a route that vanished with its TUN
//! link, a hosts block someone removed) counts as undone. Files that someone else rewrote
//! after kubelan changed them are left alone, and the report says where the original is.

pub(crate) mod record;
mod undo;

pub use crate::error::ApplyError;
pub use record::*;
pub use undo::*;

#[cfg(all(test, target_os = "linux"))]
mod tests;
pub mod unit;
