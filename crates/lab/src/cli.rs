//! The `lab` command: its arguments and what each subcommand does and prints. The binary
//! crate only parses and dispatches (in the way `kubelan_cluster::cli` serves `install`).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::{clusterdns, lifecycle, serve};

/// `kubelan lab`: build, inspect and remove simulated clusters, and run their servers.
#[derive(Args, Debug)]
pub struct LabArgs {
    /// Lab name (several labs can run side by side).
    #[arg(long, global = true, env = "KUBELAN_LAB", default_value = crate::state::DEFAULT_NAME)]
    name: String,
    #[command(subcommand)]
    command: LabCommand,
}

impl LabArgs {
    /// Whether the subcommand is a long-running server (the lab daemon, the cluster DNS, the
    /// workload servers), which logs like a daemon rather than like a command a user types.
    pub fn is_server(&self) -> bool {
        matches!(
            self.command,
            LabCommand::Daemon | LabCommand::ClusterDns { .. } | LabCommand::Serve { .. }
        )
    }

    /// Sets the output format of `up` and `status` (the binary's global `-o`); `false`
    /// when the subcommand has no format to choose.
    pub fn set_json(&mut self, json: bool) -> bool {
        match &mut self.command {
            LabCommand::Up { output, .. } | LabCommand::Status { output } => {
                *output = if json { Output::Json } else { Output::Human };
                true
            }
            _ => false,
        }
    }
}

/// Output format of `lab up` and `lab status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Output {
    #[default]
    Human,
    Json,
}

#[derive(Subcommand, Debug)]
enum LabCommand {
    /// Build the lab's network, start its API server, nodes and workloads, and return.
    Up {
        /// Topology and options (TOML); the default topology when absent.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Keep what was built when start-up fails, for debugging (remove it with `lab down`).
        #[arg(long)]
        keep_on_failure: bool,
        /// Output format (the binary's global `-o`).
        #[arg(skip)]
        output: Output,
    },
    /// Stop the lab and remove everything it created (also after a crash).
    Down {
        /// Remove every lab on this machine.
        #[arg(long)]
        all: bool,
    },
    /// Show the lab's state, hosts, pods and memory.
    Status {
        /// Output format (the binary's global `-o`).
        #[arg(skip)]
        output: Output,
    },
    /// Print the path of the lab's kubeconfig.
    Kubeconfig {
        /// The kubeconfig as seen from inside the lab (API at the control-plane node's address).
        #[arg(long)]
        lab_view: bool,
    },
    /// Run a command on a lab host (node1, pc1, laptop, ...) or in a pod (NAMESPACE/POD or pod/NAME).
    Exec {
        /// Lab host name, NAMESPACE/POD, or pod/NAME (namespace default).
        target: String,
        /// The command and its arguments (after `--`).
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// List the labs on this machine.
    List,
    /// The servers the lab's default workloads run (HTTP that answers with the pod name; TCP/UDP echo).
    Serve {
        #[command(subcommand)]
        server: ServeCommand,
    },
    /// The lab's cluster DNS: a dnsmasq fed from the API (runs in the kube-dns pod).
    ClusterDns {
        /// Cluster domain.
        #[arg(long, default_value = "cluster.local")]
        domain: String,
        /// Directory for the records file dnsmasq watches.
        #[arg(long, default_value = "/run/kubelan/cluster-dns")]
        hosts_dir: PathBuf,
        /// DNS port.
        #[arg(long, default_value_t = 53)]
        port: u16,
        /// TTL of answers in seconds.
        #[arg(long, default_value_t = 5)]
        ttl: u32,
    },
    /// Run the lab's control plane and node agents in the foreground (started by `lab up`).
    #[command(hide = true)]
    Daemon,
}

#[derive(Subcommand, Debug)]
enum ServeCommand {
    /// HTTP: `/` answers with the pod name, `/bytes/N` sends N bytes, `/ip` the client address.
    Http {
        /// Listen address.
        #[arg(long, default_value = "0.0.0.0:80")]
        listen: SocketAddr,
        /// Name to answer with (default: the host name, which is the pod name in a pod).
        #[arg(long)]
        pod_name: Option<String>,
    },
    /// TCP and/or UDP echo.
    Echo {
        /// TCP listen address.
        #[arg(long)]
        tcp: Option<SocketAddr>,
        /// UDP listen address.
        #[arg(long)]
        udp: Option<SocketAddr>,
    },
}

fn print_json(v: &impl kubelan_term::json::Document) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(&v.to_document()?)?);
    Ok(())
}

/// Prints `lab status` for people.
fn human_status(st: &lifecycle::LabStatus) {
    println!("lab {:?}: {}", st.name, st.state);
    if st.state == "absent" {
        println!(
            "  not running; start it with `sudo kubelan lab up --name {}`",
            st.name
        );
        return;
    }
    if let Some(c) = &st.created {
        println!("  created:     {c}");
    }
    if let Some(d) = &st.daemon {
        println!("  daemon:      pid {} ({} MiB)", d.pid, d.rss_kib / 1024);
    }
    println!(
        "  processes:   {} ({} MiB resident in total)",
        st.processes,
        st.total_rss_kib / 1024
    );
    if let Some(a) = &st.api_in_lab {
        println!("  API in lab:  {a}");
    }
    if let Some(a) = &st.api_on_machine {
        println!("  API here:    {a}");
    }
    if let Some(k) = &st.kubeconfig {
        println!("  kubeconfig:  {}", k.display());
    }
    if let Some(f) = &st.failure {
        println!("  failure:     {f}");
    }
    println!("\n  HOST            ROLE      UP   ADDRESSES");
    for h in &st.hosts {
        let role = serde_json::to_value(h.role)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        println!(
            "  {:<15} {:<9} {:<4} {}",
            h.name,
            role,
            if h.up { "yes" } else { "NO" },
            h.addresses.join(", ")
        );
    }
    if !st.pods.is_empty() {
        println!(
            "\n  NAMESPACE     POD                              NODE    IP              READY  STATUS   RESTARTS"
        );
        for p in &st.pods {
            println!(
                "  {:<13} {:<32} {:<7} {:<15} {:<6} {:<8} {}",
                p.namespace, p.name, p.node, p.ip, p.ready, p.phase, p.restarts
            );
        }
    }
    if let Some(e) = &st.api_error {
        println!("\n  pods unavailable: {e}");
    }
}

/// Runs one `lab` subcommand; its exit code (`lab status`: 3 when the lab is not running;
/// `lab exec`: the command's).
pub async fn run(args: LabArgs) -> anyhow::Result<ExitCode> {
    let name = args.name;
    match args.command {
        LabCommand::Up {
            config,
            keep_on_failure,
            output,
        } => {
            let tty = kubelan_term::stderr().is_rich() && output == Output::Human;
            let opts = lifecycle::UpOptions {
                name: name.clone(),
                config,
                keep_on_failure,
            };
            let mut last_len: usize = 0;
            let report = lifecycle::up(&opts, |line| {
                if output == Output::Json {
                    return;
                }
                let mut err = std::io::stderr();
                if tty {
                    let pad = last_len.saturating_sub(line.len());
                    let _ = write!(err, "\r  {line}{}", " ".repeat(pad));
                    last_len = line.len();
                } else {
                    let _ = writeln!(err, "  {line}");
                }
                let _ = err.flush();
            })
            .await;
            if tty {
                eprint!("\r{}\r", " ".repeat(last_len + 2));
            }
            let report = report?;
            if output == Output::Json {
                print_json(&report)?;
            } else {
                println!("lab {:?} is up in {:.1} s", report.name, report.seconds);
                println!(
                    "  API on this machine: {}   kubeconfig: {}",
                    report.api_on_machine,
                    report.kubeconfig.display()
                );
                println!("  API inside the lab:  {}", report.api_in_lab);
                let n = if name == crate::state::DEFAULT_NAME {
                    String::new()
                } else {
                    format!(" --name {name}")
                };
                println!(
                    "  try: sudo kubelan lab{n} exec node1 -- curl -s http://web.default.svc.cluster.local"
                );
                println!("       sudo kubelan lab{n} status");
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Down { all } => {
            let names = if all { lifecycle::list() } else { vec![name] };
            for n in names {
                let r = lifecycle::down(&n).await?;
                if r.existed {
                    println!(
                        "lab {n:?} removed in {:.1} s ({} processes stopped, {} network namespaces deleted)",
                        r.seconds, r.processes, r.namespaces
                    );
                } else {
                    println!("lab {n:?} does not exist; nothing to remove");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Status { output } => {
            let st = lifecycle::status(&name).await?;
            if output == Output::Json {
                print_json(&st)?;
            } else {
                human_status(&st);
            }
            Ok(if st.state == "running" {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            })
        }
        LabCommand::Kubeconfig { lab_view } => {
            println!("{}", lifecycle::kubeconfig(&name, lab_view)?.display());
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Exec { target, command } => {
            let code =
                lifecycle::exec(&name, &lifecycle::ExecTarget::parse(&target), &command).await?;
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
        LabCommand::List => {
            for n in lifecycle::list() {
                let st = lifecycle::status(&n).await?;
                println!("{n}\t{}", st.state);
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Serve { server } => {
            match server {
                ServeCommand::Http { listen, pod_name } => {
                    let name = pod_name.unwrap_or_else(kubelan_sys::process::hostname);
                    serve::serve_http(
                        serve::HttpOptions { listen, name },
                        kubelan_sys::process::shutdown_signal(),
                    )
                    .await?;
                }
                ServeCommand::Echo { tcp, udp } => {
                    if tcp.is_none() && udp.is_none() {
                        anyhow::bail!("give --tcp ADDR and/or --udp ADDR");
                    }
                    serve::serve_echo(
                        serve::EchoOptions { tcp, udp },
                        kubelan_sys::process::shutdown_signal(),
                    )
                    .await?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::ClusterDns {
            domain,
            hosts_dir,
            port,
            ttl,
        } => {
            let client = kube::Client::try_default().await.context(
                "cannot reach the API server (the cluster DNS runs inside the lab's kube-dns pod)",
            )?;
            let opts = clusterdns::ClusterDnsOptions {
                domain,
                hosts_dir,
                port,
                ttl,
                ..Default::default()
            };
            clusterdns::run(opts, client, kubelan_sys::process::shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Daemon => {
            crate::daemon::run(crate::state::LabPaths::new(&name)).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
