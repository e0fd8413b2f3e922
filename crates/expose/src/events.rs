//! What an expose session reports while it runs, as typed events (each says its line for
//! people and serialises as its JSON object; the CLI shows them with a live table or as JSON
//! lines), and the [`Acceptor`] that maps the relay's listeners to
//! local targets and reports every connection.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use kubelan_proto::{ErrorKind, FlowError, FlowKind, Target};
use kubelan_session::{Acceptor, FlowReport};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::spec::{ExposedPort, Host};
use kubelan_cluster::session_objects::Protocol;

/// One thing that happened in an expose session: its line for people is its
/// [`fmt::Display`]; serialised with a `"event"` tag (`{"event":"connection_closed",...}`)
/// for `--output json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ExposeEvent {
    /// Checking permissions and the name.
    Preflight {
        /// The namespace.
        namespace: String,
    },
    /// An object of the session was created.
    Created {
        /// `Job` or `Service`.
        kind: String,
        /// Its name.
        name: String,
    },
    /// The relay pod is not ready yet; what it is doing.
    Waiting {
        /// E.g. `pod kubelan-b7x2kq9d-x4z: ContainerCreating`.
        status: String,
    },
    /// The relay pod is ready.
    RelayReady {
        /// Its name.
        pod: String,
        /// Its IP.
        ip: String,
    },
    /// The Service serves: pods may connect.
    Serving {
        /// The Service's DNS name (`NAME.NS.svc`).
        service: String,
        /// `SVCPORT/proto → local target` per exposed port.
        ports: Vec<String>,
    },
    /// The link to the relay changed (`connected via ...`, `reconnecting: ...`).
    Carrier {
        /// Whether a carrier is up.
        up: bool,
        /// The session's one-line state.
        state: String,
    },
    /// A pod connected to an exposed port.
    ConnectionOpened {
        /// The listener (argument index).
        listener: u32,
        /// The pod's address.
        peer: String,
        /// The local target.
        local: String,
    },
    /// A connection ended.
    ConnectionClosed {
        /// The listener (argument index).
        listener: u32,
        /// The pod's address.
        peer: String,
        /// Bytes (TCP) or datagrams (UDP) from the pod to the local target.
        to_local: u64,
        /// Bytes (TCP) or datagrams (UDP) from the local target to the pod.
        from_local: u64,
        /// Why it failed or was cut; `None` for a clean end.
        error: Option<String>,
    },
    /// The session is being taken down (Ctrl-C); Kubernetes removes the rest.
    Stopping {
        /// The Job deleted.
        job: String,
    },
    /// Something the user should know (`replace`: a GitOps tool manages the Service, a
    /// Service port that is not taken over, a headless Service).
    Warning {
        /// One sentence.
        message: String,
    },
    /// `replace`: the Service's selector now points at the session's relay.
    Replaced {
        /// The Service.
        service: String,
        /// The selector it had (`app=web`), put back at the end.
        original: String,
    },
    /// `replace`: the selector is swapped but the Service's EndpointSlices do not list
    /// only the relay yet.
    Moving {
        /// The Service.
        service: String,
        /// Where its endpoints stand (`the relay listed, 2 old endpoints still listed`).
        status: String,
    },
    /// `replace`: the Service was put back (or found already put back).
    Restored {
        /// The Service.
        service: String,
        /// What was done, one sentence.
        outcome: String,
    },
}

impl kubelan_term::json::Document for ExposeEvent {
    const TYPE: &'static str = "ExposeEvent";
}

impl fmt::Display for ExposeEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExposeEvent::Preflight { namespace } => {
                write!(f, "checking permissions in namespace {namespace}")
            }
            ExposeEvent::Created { kind, name } => write!(f, "created {kind} {name}"),
            ExposeEvent::Waiting { status } => write!(f, "waiting for the relay: {status}"),
            ExposeEvent::RelayReady { pod, ip } => write!(f, "relay {pod} ready at {ip}"),
            ExposeEvent::Serving { service, ports } => {
                write!(f, "serving {service}: {}", ports.join(", "))
            }
            ExposeEvent::Carrier { state, .. } => write!(f, "link: {state}"),
            ExposeEvent::ConnectionOpened {
                listener,
                peer,
                local,
            } => write!(f, "#{listener} {peer} → {local}"),
            ExposeEvent::ConnectionClosed {
                listener,
                peer,
                to_local,
                from_local,
                error,
            } => {
                write!(
                    f,
                    "#{listener} {peer} closed: {to_local} in, {from_local} out"
                )?;
                error.as_ref().map_or(Ok(()), |e| write!(f, " ({e})"))
            }
            ExposeEvent::Stopping { job } => write!(
                f,
                "stopping: deleted job {job}; Kubernetes removes the relay and the session's objects"
            ),
            ExposeEvent::Warning { message } => write!(f, "warning: {message}"),
            ExposeEvent::Moving { service, status } => {
                write!(f, "waiting for Service {service}'s endpoints: {status}")
            }
            ExposeEvent::Replaced { service, original } => write!(
                f,
                "replaced: Service {service} now sends its traffic here (its selector {original} comes back at exit)"
            ),
            ExposeEvent::Restored { outcome, .. } => write!(f, "restored: {outcome}"),
        }
    }
}

/// Maps listener ids to the local targets of an expose session; reports every flow as
/// [`ExposeEvent`]s on `events`.
pub struct ExposeAcceptor {
    /// Grows while the session runs (`kubelan run`'s ports as the program opens them).
    ports: RwLock<Vec<ExposedPort>>,
    events: mpsc::UnboundedSender<ExposeEvent>,
}

impl ExposeAcceptor {
    /// An acceptor for `ports` (their ids are the listener ids of the relay).
    pub fn new(ports: Vec<ExposedPort>, events: mpsc::UnboundedSender<ExposeEvent>) -> Arc<Self> {
        Arc::new(Self {
            ports: RwLock::new(ports),
            events,
        })
    }

    /// Routes listener `port.id` to `port.local` from now on (a listener the relay opens
    /// on request); an existing route for that id is replaced.
    pub fn add(&self, port: ExposedPort) {
        let mut ports = self.ports.write().unwrap_or_else(|e| e.into_inner());
        ports.retain(|p| p.id != port.id);
        ports.push(port);
    }
}

/// Where a flow for `port` goes.
pub fn target_of(port: &ExposedPort) -> Target {
    match &port.local.host {
        Host::Ip(ip) => Target::Addr(SocketAddr::new(*ip, port.local.port)),
        Host::Name(n) => Target::Name {
            host: n.clone(),
            port: port.local.port,
        },
    }
}

/// The listener `id` of `ports` for a flow of `kind`, or the error the relay gets.
///
/// # Errors
/// [`ErrorKind::Policy`] for an unknown listener or a kind the listener does not take
/// (a relay out of step with this client).
pub fn route(ports: &[ExposedPort], id: u32, kind: FlowKind) -> Result<Target, FlowError> {
    let port = ports.iter().find(|p| p.id == id).ok_or_else(|| {
        FlowError::new(
            ErrorKind::Policy,
            format!("this client has no listener {id}"),
        )
    })?;
    let want = match port.local.protocol {
        Protocol::Tcp => FlowKind::Tcp,
        Protocol::Udp => FlowKind::Udp,
    };
    if kind != want {
        return Err(FlowError::new(
            ErrorKind::Policy,
            format!("listener {id} takes {} flows", port.local.protocol),
        ));
    }
    Ok(target_of(port))
}

impl Acceptor for ExposeAcceptor {
    fn target(&self, listener: u32, kind: FlowKind, peer: SocketAddr) -> Result<Target, FlowError> {
        let target = {
            let ports = self.ports.read().unwrap_or_else(|e| e.into_inner());
            route(&ports, listener, kind)?
        };
        // A closed receiver means nobody renders any more; the flow still runs.
        let _ = self.events.send(ExposeEvent::ConnectionOpened {
            listener,
            peer: peer.to_string(),
            local: target.to_string(),
        });
        Ok(target)
    }

    fn ended(&self, r: &FlowReport) {
        let _ = self.events.send(ExposeEvent::ConnectionClosed {
            listener: r.listener,
            peer: r.peer.to_string(),
            to_local: r.to_local,
            from_local: r.from_local,
            error: r.error.as_ref().map(ToString::to_string),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::plan;

    /// `expose --output json`: a versioned `ExposeEvent`; the envelope's `type` leaves the
    /// event's own `kind` (the object created) alone (docs/json.md).
    #[test]
    fn json_lines_are_versioned_documents() {
        use kubelan_term::json::Document;
        let e = ExposeEvent::Created {
            kind: "Job".into(),
            name: "kubelan-x".into(),
        };
        let v = e.to_document().unwrap();
        assert_eq!(v["apiVersion"], "kubelan.dev/v1");
        assert_eq!(v["type"], "ExposeEvent");
        assert_eq!(v["event"], "created");
        assert_eq!(v["kind"], "Job");
    }

    #[test]
    fn listeners_map_to_their_targets_and_flows_are_reported() {
        let p = plan(
            &["8080".into(), "pc1.lan:53/udp".into(), "[::1]:9000".into()],
            &[],
            None,
        )
        .unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let a = ExposeAcceptor::new(p.ports, tx);
        let peer: SocketAddr = "10.244.1.7:40000".parse().unwrap();
        assert_eq!(
            a.target(0, FlowKind::Tcp, peer).unwrap(),
            Target::Addr("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            a.target(1, FlowKind::Udp, peer).unwrap(),
            Target::Name {
                host: "pc1.lan".into(),
                port: 53
            }
        );
        assert_eq!(
            a.target(2, FlowKind::Tcp, peer).unwrap(),
            Target::Addr("[::1]:9000".parse().unwrap())
        );
        assert_eq!(
            a.target(1, FlowKind::Tcp, peer).unwrap_err().kind,
            ErrorKind::Policy
        );
        assert_eq!(
            a.target(3, FlowKind::Tcp, peer).unwrap_err().kind,
            ErrorKind::Policy
        );
        a.ended(&FlowReport {
            listener: 0,
            kind: FlowKind::Tcp,
            peer,
            local: None,
            to_local: 10,
            from_local: 20,
            error: None,
        });
        let mut got = Vec::new();
        while let Ok(e) = rx.try_recv() {
            got.push(serde_json::to_value(&e).unwrap());
        }
        assert_eq!(got.len(), 4);
        assert_eq!(
            got[0],
            serde_json::json!({"event": "connection_opened", "listener": 0,
                "peer": "10.244.1.7:40000", "local": "127.0.0.1:8080"})
        );
        assert_eq!(
            got[3],
            serde_json::json!({"event": "connection_closed", "listener": 0,
                "peer": "10.244.1.7:40000", "to_local": 10, "from_local": 20, "error": null})
        );
    }
}
