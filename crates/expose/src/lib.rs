//! `kubelan expose`: local ports (or LAN hosts' ports, on a gateway) become a Service in the
//! cluster; `kubelan replace` ([`replace`]): an existing Service's traffic comes to this
//! machine until the session ends, through the same per-session relay.
//!
//! Each session is a Job `kubelan-<id>` whose pod runs `kubelan relay` (Pod Security
//! `restricted`, no service-account token). The Service `NAME` selects that pod; the
//! relay takes pods' connections on its listeners and opens each as a reverse flow on the
//! client's session, whose [`events::ExposeAcceptor`] sends it to the local HOST:PORT.
//!
//! ```text
//! pod ─▶ Service NAME ─▶ relay pod (listener i) ══ reverse flow, carrier = port-forward ══▶ client ─▶ HOST:PORT
//!                        Job kubelan-<id> owns Service + pod; relay exits 10 s after losing the client
//! ```
//!
//! Sans-IO: [`spec`] (the command line and the plan), [`relay_status`] (is the relay pod
//! ready, starting, or never starting and why), [`events`] (the typed events and the
//! acceptor's routing), [`table`] (the live table), [`env`] (what `kubelan run` tells
//! its program). At the edge: [`session::run`], and [`run::run`], which wraps a local
//! program in the same session.

pub mod env;
pub mod error;
pub mod events;
#[cfg(any(fuzzing, feature = "fuzz"))]
pub mod fuzz_entry;
pub mod ports;
pub mod relay_status;
pub mod replace;
pub mod replace_plan;
pub mod run;
pub mod session;
pub mod spec;
pub mod table;
pub mod via;

pub use error::ExposeError;
pub use events::{ExposeAcceptor, ExposeEvent};
pub use replace::{ReplaceRequest, run_replace};
pub use replace_plan::{ReplacePlan, ReplaceSpecError};
pub use run::{RunError, RunEvent, RunOptions};
pub use session::{ExposeOptions, run};
pub use spec::{ExposePlan, LocalTarget, SpecError, plan};
pub use table::Table;
pub use via::{SessionRequest, Via, ViaError, ViaNote};
