//! `kubelan run [--expose PORT…] -- CMD ARGS…`: an expose session (the same Job, relay
//! pod and Service as [`crate::session::run`]) whose life is the life of a local program.
//!
//! Once the Service serves, the program starts with the Service's cluster address in its
//! environment ([`crate::env::cluster_env`]), so that it registers in Nacos, Eureka,
//! Consul, Dubbo or etcd an address pods can dial. When the program exits, the session
//! ends (the Job is deleted, Kubernetes removes the rest) and kubelan exits with the
//! program's status. SIGTERM (and SIGINT or SIGHUP that did not come from the terminal) are
//! passed on to the program; a `kill -9` of kubelan ends the program too
//! (`PR_SET_PDEATHSIG`) and leaves the cluster side to the relay's expiry, as for expose.
//!
//! Without `--expose`, the ports the program starts listening on are exposed as they
//! appear: the program's process tree is scanned every [`PORT_POLL`] ([`crate::ports`]),
//! the relay opens a listener for each new port ([`kubelan_session::Session::listen`])
//! and the session's Service gains the port.
//!
//! Decisions are pure ([`forward_signal`], [`exit_code`], [`foreground_from_stat`],
//! [`add_port_patch`]); this module's [`run`] only starts, waits and signals.

use std::ffi::OsString;
use std::fmt;
use std::process::ExitStatus;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use kubelan_cluster::session_objects::ServicePortSpec;
use kubelan_proto::FlowKind;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::env::{SessionFacts, cluster_env};
use crate::error::{ExposeError, api};
use crate::events::ExposeEvent;
use crate::ports::{PortWatch, scan};
use crate::session::{ExposeOptions, ServingHandles};
use crate::spec::{ExposePlan, discovered};

/// How long the program gets to stop after SIGTERM when the session fails under it,
/// before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often the program's listening ports are scanned without `--expose`.
pub const PORT_POLL: Duration = Duration::from_millis(200);
/// At most this many ports are exposed automatically (a program that opens more is
/// probably not a service; the rest are reported and skipped).
pub const MAX_AUTO_PORTS: usize = 32;

/// Everything `kubelan run` needs besides the plan.
#[derive(Clone)]
pub struct RunOptions {
    /// The session (its `mode` should be [`kubelan_cluster::session_objects::Mode::Run`]).
    pub session: ExposeOptions,
    /// The cluster's DNS domain, for `KUBELAN_CLUSTER_HOST`.
    pub cluster_domain: String,
    /// The program and its arguments (at least the program).
    pub program: Vec<OsString>,
}

/// A signal `kubelan run` handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sig {
    /// SIGINT (Ctrl-C).
    Int,
    /// SIGTERM.
    Term,
    /// SIGHUP (the terminal closed).
    Hup,
}

impl Sig {
    /// The signal's number (Linux).
    pub fn number(self) -> i32 {
        match self {
            Sig::Hup => 1,
            Sig::Int => 2,
            Sig::Term => 15,
        }
    }
}

impl fmt::Display for Sig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Sig::Int => "SIGINT",
            Sig::Term => "SIGTERM",
            Sig::Hup => "SIGHUP",
        })
    }
}

/// One thing that happened in a `kubelan run` session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEvent {
    /// What the expose session under it reports.
    Session(ExposeEvent),
    /// The program started.
    Started {
        /// Its PID.
        pid: u32,
        /// The command line, for people.
        program: String,
        /// The variables kubelan set.
        env: Vec<(String, String)>,
    },
    /// kubelan received a signal.
    Signal {
        /// Which.
        signal: Sig,
        /// Whether kubelan passed it on (not when the terminal already delivered it to the
        /// program).
        forwarded: bool,
    },
    /// A port the program listens on is exposed (without `--expose`).
    PortExposed {
        /// Where the program listens.
        local: String,
        /// The Service port pods dial.
        service_port: u16,
    },
    /// A port the program listens on could not be exposed.
    PortFailed {
        /// Where the program listens.
        local: String,
        /// Why.
        error: String,
    },
    /// The program exited.
    Exited {
        /// kubelan's exit code: the program's, or 128 + the signal that ended it.
        code: u8,
    },
}

/// kubelan's line for an event (on stderr, after `kubelan: `): the session's events read
/// as in `kubelan expose`, except a connection (no arrow: the program is the target), the
/// end (the Service goes too) and a Service whose ports come as the program opens them.
impl fmt::Display for RunEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunEvent::Session(ExposeEvent::ConnectionClosed {
                listener,
                peer,
                to_local,
                from_local,
                error,
            }) => {
                write!(f, "#{listener} {peer}: {to_local} in, {from_local} out")?;
                error.as_ref().map_or(Ok(()), |e| write!(f, " ({e})"))
            }
            RunEvent::Session(ExposeEvent::Stopping { job }) => write!(
                f,
                "session ended: deleted job {job}; Kubernetes removes the Service and the relay"
            ),
            RunEvent::Session(ExposeEvent::Serving { service, ports }) if ports.is_empty() => {
                write!(
                    f,
                    "serving {service}: the program's ports are added as it opens them"
                )
            }
            RunEvent::Session(e) => fmt::Display::fmt(e, f),
            RunEvent::Started { pid, program, env } => {
                let get = |k: &str| {
                    env.iter()
                        .find(|(n, _)| n == k)
                        .map_or("", |(_, v)| v.as_str())
                };
                write!(
                    f,
                    "started {program} (pid {pid}) as {} = {}",
                    get("KUBELAN_CLUSTER_HOST"),
                    get("KUBELAN_CLUSTER_IP")
                )
            }
            RunEvent::Signal {
                signal,
                forwarded: true,
            } => write!(f, "{signal}: passed on to the program"),
            RunEvent::Signal {
                signal,
                forwarded: false,
            } => write!(f, "{signal}: stopping"),
            RunEvent::PortExposed {
                local,
                service_port,
            } => write!(f, "exposed {local} as port {service_port} of the Service"),
            RunEvent::PortFailed { local, error } => write!(f, "not exposing {local}: {error}"),
            RunEvent::Exited { code } => write!(f, "the program exited with status {code}"),
        }
    }
}

/// Why `kubelan run` failed (the program's own failure is its exit code, not an error).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The session could not start or failed.
    #[error(transparent)]
    Session(#[from] ExposeError),
    /// The program could not be started.
    #[error("cannot start {program:?}: {source}; check the command after `--`")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The Service has no usable ClusterIP (a headless Service, or an API server that
    /// did not allocate one).
    #[error(
        "Service {name} in {namespace} has no ClusterIP ({got:?}); the program would have no cluster address to announce"
    )]
    NoClusterIp {
        /// The Service.
        name: String,
        /// Its namespace.
        namespace: String,
        /// What the API server returned.
        got: Option<String>,
    },
    /// The session ended before the program could start, without an error.
    #[error("the link to the relay ended before the program started; run the command again")]
    EndedEarly,
    /// The link to the relay failed while the program ran; the program was stopped.
    #[error("{source}; the program was stopped (it had no cluster address any more)")]
    LostSession {
        /// The session's failure.
        #[source]
        source: ExposeError,
    },
}

impl RunError {
    /// The session's failures in the words of every other mode ([`ExposeError::explain`]).
    pub fn explain(self, cc: &kubelan_cluster::ClusterClient) -> RunError {
        match self {
            RunError::Session(e) => {
                RunError::Session(e.explain(cc, kubelan_cluster::session_objects::Mode::Run))
            }
            e => e,
        }
    }
}

/// Whether a received `sig` is passed on to the program. A terminal sends Ctrl-C (SIGINT)
/// and its hang-up (SIGHUP) to every process of its foreground process group, the program
/// included: passing them on again would deliver them twice (and a second Ctrl-C means
/// "stop now, skip the cleanup" to many programs). SIGTERM is always sent to kubelan
/// alone (by `kill`, systemd, a CI runner), so it is always passed on.
pub fn forward_signal(sig: Sig, terminal_foreground: bool) -> bool {
    match sig {
        Sig::Term => true,
        Sig::Int | Sig::Hup => !terminal_foreground,
    }
}

/// kubelan's exit code for the program's `code` (when it exited) or the `signal` that
/// ended it: as a shell reports it (128 + the signal's number).
pub fn exit_code(code: Option<i32>, signal: Option<i32>) -> u8 {
    match (code, signal) {
        // Exit statuses are one byte; a wider value cannot occur on Unix.
        (Some(c), _) => u8::try_from(c & 0xff).unwrap_or(1),
        (None, Some(s)) => u8::try_from(128 + (s & 0x7f)).unwrap_or(1),
        (None, None) => 1,
    }
}

pub use kubelan_sys::procstat::foreground_from_stat;

fn terminal_foreground() -> bool {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| foreground_from_stat(&s))
        .unwrap_or(false)
}

fn status_code(s: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    exit_code(s.code(), s.signal())
}

/// SIGINT, SIGTERM and SIGHUP as a stream; installing them stops their default action
/// (ending kubelan at once, without deleting the Job).
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn recv(&mut self) -> Sig {
        tokio::select! {
            Some(()) = self.int.recv() => Sig::Int,
            Some(()) = self.term.recv() => Sig::Term,
            Some(()) = self.hup.recv() => Sig::Hup,
        }
    }
}

fn send_signal(pid: u32, sig: Sig) {
    use nix::sys::signal::{Signal, kill};
    let s = match sig {
        Sig::Int => Signal::SIGINT,
        Sig::Term => Signal::SIGTERM,
        Sig::Hup => Signal::SIGHUP,
    };
    if let Ok(pid) = i32::try_from(pid) {
        // The program may have exited a moment ago (ESRCH): nothing to do then.
        let _ = kill(nix::unistd::Pid::from_raw(pid), s);
    }
}

/// The session's facts, once its Service exists.
async fn facts(plan: &ExposePlan, o: &RunOptions, name: &str) -> Result<SessionFacts, RunError> {
    let ns = o.session.namespace.as_str();
    let services: Api<Service> = Api::namespaced(o.session.client.clone(), ns);
    let svc = services
        .get(name)
        .await
        .map_err(api(format!("get services/{name} in {ns}")))?;
    let got = svc.spec.and_then(|s| s.cluster_ip);
    let cluster_ip = got
        .as_deref()
        .and_then(|ip| ip.parse().ok())
        .ok_or_else(|| RunError::NoClusterIp {
            name: name.into(),
            namespace: ns.into(),
            got: got.clone(),
        })?;
    Ok(SessionFacts {
        cluster_ip,
        service: name.into(),
        namespace: ns.into(),
        cluster_domain: o.cluster_domain.clone(),
        ports: plan.ports.iter().map(|p| p.service_port).collect(),
    })
}

/// A merge patch that adds `add` to the Service's ports (with its resourceVersion, so a
/// concurrent change fails with a conflict instead of being overwritten); `None` when the
/// Service has that port already.
pub fn add_port_patch(svc: &Service, add: &ServicePortSpec) -> Option<serde_json::Value> {
    let mut ports: Vec<serde_json::Value> = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .map(|ps| {
            ps.iter()
                .map(|p| serde_json::to_value(p).unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    let protocol = add.protocol.k8s();
    let same = |p: &serde_json::Value| {
        p["port"] == add.port && p["protocol"].as_str().unwrap_or("TCP") == protocol
    };
    if ports.iter().any(same) {
        return None;
    }
    ports.push(serde_json::json!({"name": add.name, "port": add.port,
        "targetPort": add.target_port, "protocol": protocol}));
    Some(serde_json::json!({
        "metadata": {"resourceVersion": svc.metadata.resource_version},
        "spec": {"ports": ports},
    }))
}

/// Adds `add` to Service `name` (one retry after a conflict).
async fn add_service_port(
    services: &Api<Service>,
    name: &str,
    add: &ServicePortSpec,
) -> Result<(), kube::Error> {
    let mut tries = 0;
    loop {
        tries += 1;
        let svc = services.get(name).await?;
        let Some(patch) = add_port_patch(&svc, add) else {
            return Ok(());
        };
        match services
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 && tries < 3 => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Exposes the ports the program's tree listens on, as they appear, until `stop`.
async fn watch_ports(
    pid: u32,
    handles: ServingHandles,
    carrier_port: u16,
    services: Api<Service>,
    name: String,
    emit: impl Fn(RunEvent),
    stop: CancellationToken,
) {
    let mut watch = PortWatch::new([carrier_port]);
    let mut next_id = 0u32;
    let mut tick = tokio::time::interval(PORT_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Ok(now) = tokio::task::spawn_blocking(move || scan(pid)).await else {
            continue;
        };
        for local in watch.update(&now) {
            let failed = |error: String| RunEvent::PortFailed {
                local: local.to_string(),
                error,
            };
            if next_id as usize >= MAX_AUTO_PORTS {
                emit(failed(format!(
                    "the program listens on more than {MAX_AUTO_PORTS} ports; the rest are not exposed (use --expose)"
                )));
                continue;
            }
            let Some(port) = discovered(next_id, local, carrier_port) else {
                emit(failed(format!(
                    "the relay's carrier uses port {carrier_port}; expose it with --expose {} --port ANOTHER",
                    local.port()
                )));
                continue;
            };
            next_id += 1;
            handles.acceptor.add(port.clone());
            if let Err(e) = handles
                .relay
                .listen(port.id, FlowKind::Tcp, port.relay_port)
                .await
            {
                emit(failed(format!(
                    "the relay did not open port {}: {e}",
                    port.relay_port
                )));
                continue;
            }
            match add_service_port(&services, &name, &port.service_port_spec()).await {
                Ok(()) => emit(RunEvent::PortExposed {
                    local: local.to_string(),
                    service_port: port.service_port,
                }),
                Err(e) => emit(failed(format!(
                    "adding port {} to Service {name}: {}",
                    port.service_port,
                    kubelan_cluster::error::describe(&e)
                ))),
            }
        }
    }
}

fn command_line(program: &[OsString]) -> String {
    program
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

type SessionTask = tokio::task::JoinHandle<Result<(), ExposeError>>;

/// Waits for the session task after its stop was requested; its error (if any) is only
/// worth a log line then.
async fn finish(task: SessionTask) -> Result<(), ExposeError> {
    task.await
        .unwrap_or_else(|e| Err(ExposeError::Carrier(format!("internal error: {e}"))))
}

/// Runs `o.program` inside an expose session of `plan`: starts the session, waits until
/// its Service serves, starts the program with the cluster address in its environment,
/// passes signals on, and ends the session when the program exits. Returns kubelan's
/// exit code (the program's).
///
/// # Errors
/// A [`RunError`]: the session could not start (permissions, a taken name, a relay that
/// does not start), the program could not start, or the session failed under it.
pub async fn run(
    plan: &ExposePlan,
    o: &RunOptions,
    events: mpsc::UnboundedSender<RunEvent>,
) -> Result<u8, RunError> {
    let emit = |e: RunEvent| {
        let _ = events.send(e);
    };
    // Installed before anything is created, so that Ctrl-C always deletes the Job.
    let mut signals = Signals::new()
        .map_err(|e| ExposeError::Carrier(format!("cannot install the signal handlers: {e}")))?;
    let stop = CancellationToken::new();
    let (session_tx, mut session_rx) = mpsc::unbounded_channel();
    let (serving_tx, mut serving_rx) = mpsc::unbounded_channel();
    let mut task: SessionTask = {
        let (plan, mut opts, stop) = (plan.clone(), o.session.clone(), stop.clone());
        opts.on_serving = Some(serving_tx);
        tokio::spawn(async move { crate::session::run(&plan, &opts, session_tx, stop).await })
    };
    let mut service = plan.name.clone();

    // Until the Service serves.
    let facts = loop {
        tokio::select! {
            Some(e) = session_rx.recv() => {
                if let ExposeEvent::Created { kind, name } = &e
                    && kind == "Service"
                {
                    service = Some(name.clone());
                }
                let serving = matches!(e, ExposeEvent::Serving { .. });
                emit(RunEvent::Session(e));
                if serving {
                    let name = service.clone().unwrap_or_default();
                    match facts(plan, o, &name).await {
                        Ok(f) => break f,
                        Err(e) => {
                            stop.cancel();
                            let _ = finish(task).await;
                            drain(&mut session_rx, &emit);
                            return Err(e);
                        }
                    }
                }
            }
            r = &mut task => {
                drain(&mut session_rx, &emit);
                return match r {
                    Ok(Ok(())) => Err(RunError::EndedEarly),
                    Ok(Err(e)) => Err(e.into()),
                    Err(e) => Err(ExposeError::Carrier(format!("internal error: {e}")).into()),
                };
            }
            sig = signals.recv() => {
                emit(RunEvent::Signal { signal: sig, forwarded: false });
                stop.cancel();
                let _ = finish(task).await;
                drain(&mut session_rx, &emit);
                return Ok(exit_code(None, Some(sig.number())));
            }
        }
    };

    let env = cluster_env(&facts);
    let Some(program) = o.program.first() else {
        stop.cancel();
        let _ = finish(task).await;
        return Err(RunError::Spawn {
            program: String::new(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no program given"),
        });
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(&o.program[1..]).envs(env.iter().cloned());
    #[cfg(target_os = "linux")]
    kubelan_sys::die_with_parent_on_spawn(&mut cmd, nix::sys::signal::Signal::SIGTERM);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(source) => {
            stop.cancel();
            let _ = finish(task).await;
            drain(&mut session_rx, &emit);
            return Err(RunError::Spawn {
                program: program.to_string_lossy().into_owned(),
                source,
            });
        }
    };
    let pid = child.id().unwrap_or(0);
    emit(RunEvent::Started {
        pid,
        program: command_line(&o.program),
        env,
    });
    // Without --expose: the program's ports, as they appear.
    let watch_stop = stop.child_token();
    let _watch_guard = watch_stop.clone().drop_guard();
    if plan.ports.is_empty()
        && let Ok(handles) = serving_rx.try_recv()
    {
        let services: Api<Service> =
            Api::namespaced(o.session.client.clone(), &o.session.namespace);
        let events = events.clone();
        tokio::spawn(watch_ports(
            pid,
            handles,
            plan.carrier_port,
            services,
            facts.service.clone(),
            move |e| {
                let _ = events.send(e);
            },
            watch_stop.clone(),
        ));
    }

    // While the program runs.
    let status = loop {
        tokio::select! {
            st = child.wait() => break st,
            Some(e) = session_rx.recv() => emit(RunEvent::Session(e)),
            sig = signals.recv() => {
                let forwarded = forward_signal(sig, terminal_foreground());
                if forwarded {
                    send_signal(pid, sig);
                }
                emit(RunEvent::Signal { signal: sig, forwarded });
            }
            r = &mut task => {
                // The session ended under the program: without it, the program's cluster
                // address leads nowhere. Stop the program, then report why.
                drain(&mut session_rx, &emit);
                send_signal(pid, Sig::Term);
                if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err() {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                }
                let source = match r {
                    Ok(Err(e)) => e,
                    Ok(Ok(())) => ExposeError::Carrier("the link to the relay ended".into()),
                    Err(e) => ExposeError::Carrier(format!("internal error: {e}")),
                };
                return Err(RunError::LostSession { source });
            }
        }
    };
    watch_stop.cancel();
    let code = match status {
        Ok(s) => status_code(s),
        Err(e) => {
            tracing::warn!("waiting for the program: {e}");
            1
        }
    };
    emit(RunEvent::Exited { code });
    stop.cancel();
    if let Err(e) = finish(task).await {
        tracing::warn!("ending the session: {e}");
    }
    drain(&mut session_rx, &emit);
    Ok(code)
}

fn drain(rx: &mut mpsc::UnboundedReceiver<ExposeEvent>, emit: &impl Fn(RunEvent)) {
    while let Ok(e) = rx.try_recv() {
        emit(RunEvent::Session(e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_signals_are_not_delivered_twice() {
        assert!(forward_signal(Sig::Term, true));
        assert!(forward_signal(Sig::Term, false));
        assert!(
            !forward_signal(Sig::Int, true),
            "Ctrl-C reached the program already"
        );
        assert!(
            forward_signal(Sig::Int, false),
            "kill -INT reached kubelan alone"
        );
        assert!(!forward_signal(Sig::Hup, true));
        assert!(forward_signal(Sig::Hup, false));
    }

    #[test]
    fn exit_codes_are_what_a_shell_reports() {
        assert_eq!(exit_code(Some(0), None), 0);
        assert_eq!(exit_code(Some(3), None), 3);
        assert_eq!(exit_code(Some(256 + 7), None), 7);
        assert_eq!(exit_code(None, Some(15)), 143);
        assert_eq!(exit_code(None, Some(2)), 130);
        assert_eq!(exit_code(None, Some(9)), 137);
        assert_eq!(exit_code(None, None), 1);
    }

    #[test]
    fn a_port_is_added_once_with_the_resource_version() {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "auto", "resourceVersion": "42"},
            "spec": {"ports": [{"name": "kubelan-carrier", "port": 7445, "targetPort": 7445,
                "protocol": "TCP"}]}
        }))
        .unwrap();
        let add = ServicePortSpec {
            name: "tcp-8090".into(),
            port: 8090,
            target_port: 8090,
            protocol: kubelan_cluster::session_objects::Protocol::Tcp,
        };
        let p = add_port_patch(&svc, &add).unwrap();
        assert_eq!(p["metadata"]["resourceVersion"], "42");
        let ports = p["spec"]["ports"].as_array().unwrap();
        assert_eq!(ports.len(), 2);
        assert_eq!(ports[0]["port"], 7445);
        assert_eq!(
            ports[1],
            serde_json::json!({"name": "tcp-8090", "port": 8090, "targetPort": 8090, "protocol": "TCP"})
        );
        let mut svc2 = svc.clone();
        svc2.spec.as_mut().unwrap().ports =
            Some(serde_json::from_value(serde_json::json!([ports[0], ports[1]])).unwrap());
        assert_eq!(add_port_patch(&svc2, &add), None, "already there");
    }

    #[test]
    fn signal_numbers_are_linux_ones() {
        assert_eq!([Sig::Hup, Sig::Int, Sig::Term].map(Sig::number), [1, 2, 15]);
        assert_eq!(Sig::Term.to_string(), "SIGTERM");
    }
}
