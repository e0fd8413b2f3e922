//! `kubelan forward`: arguments, the permission check, when the hosts block is written,
//! and the output (a live table on a terminal, plain lines otherwise, JSON lines with
//! `--output json`). The checks of the command line, the hosts block and the forwarding
//! itself are `kubelan_forward`.

use crate::Output;
use crate::live::{Mode, Screen};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, Args};
use kubelan_cluster::KubeconfigArgs;
use kubelan_forward::{Event, Events, HostsBlock, Options, Running, render_table};
use kubelan_sys::hosts::{self, HostsEntry};
use tokio::sync::watch;

/// `kubelan forward`.
#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  kubelan forward svc/web 8080:80                 one Service (follows its pods)\n  kubelan forward svc/web 8080:80 svc/db 5432 pod/x :9000\n  kubelan forward deploy/api :http --address localhost,10.0.0.5\n  sudo kubelan forward -n default -n team         every Service, by name (hosts block)\n  kubelan forward -n default --no-hosts           every Service, address table only"
)]
pub(crate) struct ForwardArgs {
    /// Targets and their ports: `svc/NAME`, `pod/NAME` (or a bare name) or `deploy/NAME`,
    /// each followed by `LOCAL:REMOTE`, `REMOTE` or `:REMOTE` (a free local port); REMOTE
    /// may be a port name. Without targets: every Service of the namespaces (bulk mode).
    #[arg(value_name = "TARGET PORT...")]
    targets: Vec<String>,
    /// The global `--kubeconfig` and `--context`.
    #[arg(skip)]
    pub(crate) kube: KubeconfigArgs,
    /// The global `-n`: repeat for several in bulk mode [default: the context's namespace].
    #[arg(skip)]
    pub(crate) namespace: Vec<String>,
    /// Bulk mode: only Services matching this label selector (e.g. `app=web,tier!=db`).
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    selector: Option<String>,
    /// Local addresses to listen on (comma-separated; `localhost` is 127.0.0.1 and ::1).
    #[arg(long, value_name = "ADDRESS", action = ArgAction::Append)]
    address: Vec<String>,
    /// Bulk mode: do not write names to the hosts file (no root needed); print the
    /// address table instead.
    #[arg(long)]
    no_hosts: bool,
    /// Bulk mode: the hosts file to put the names in.
    #[arg(long, value_name = "FILE", default_value = hosts::DEFAULT_HOSTS)]
    hosts_file: PathBuf,
    /// Bulk mode: the cluster domain of the long names.
    #[arg(long, value_name = "DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// How long a new connection waits for a ready pod before it is closed.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pod_timeout: u64,
    /// The global `-o`: JSON lines are events, `stats` every 5 s, `stopped` at the end.
    #[arg(skip)]
    pub(crate) output: Output,
}

/// What the user sees.
struct Ui {
    screen: Screen,
    bulk_no_hosts: bool,
}

impl Ui {
    fn table(running: &Running) -> String {
        let rows = running.registry.rows();
        render_table(&rows, &running.registry.totals(), Screen::width())
    }

    fn draw(&mut self, running: &Running) {
        if self.screen.mode == Mode::Table {
            self.screen.draw(&Self::table(running));
        }
    }

    fn event(&mut self, e: &Event, running: &Running) {
        self.screen.event(
            || kubelan_term::json::Document::to_document(e).unwrap_or_default(),
            || e.to_string(),
            matches!(e, Event::Listening { note: None, .. }),
            || Self::table(running),
        );
        if self.bulk_no_hosts && matches!(e, Event::Ready { .. }) {
            self.address_table(running);
        }
    }

    /// Bulk mode without hosts: the lines a hosts file would need, with the ports.
    fn address_table(&mut self, running: &Running) {
        let Some(names) = &running.names else { return };
        let entries = names.borrow().clone();
        let rows = running.registry.rows();
        let mut text =
            String::from("# address table (add to a hosts file, or use the addresses directly):\n");
        for e in &entries {
            let ports: Vec<String> = rows
                .iter()
                .filter(|r| r.local.iter().any(|l| l.starts_with(&format!("{}:", e.ip))))
                .flat_map(|r| r.ports.clone())
                .collect();
            text.push_str(&format!(
                "{}\t{}\t# ports {}\n",
                e.ip,
                e.names.join(" "),
                ports.join(",")
            ));
        }
        match self.screen.mode {
            Mode::Json => self.screen.json(&kubelan_forward::report::json_line(
                serde_json::json!({"event": "addresses", "entries": entries}),
            )),
            Mode::Lines => self.screen.print(&text),
            Mode::Table => {
                self.screen.print(&text);
                self.draw(running);
            }
        }
    }

    fn stats(&self, running: &Running, event: &str) {
        if self.screen.mode == Mode::Json {
            self.screen
                .json(&kubelan_forward::report::json_line(serde_json::json!({
                    "event": event,
                    "totals": running.registry.totals(),
                    "forwards": running.registry.rows(),
                })));
        }
    }
}

/// Waits for the next change of the names; `false` when the engine is gone. Never returns
/// without names.
async fn names_changed(names: &mut Option<watch::Receiver<Vec<HostsEntry>>>) -> bool {
    match names {
        Some(n) => n.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// Runs `kubelan forward` until Ctrl-C or SIGTERM.
pub(crate) async fn run(args: ForwardArgs) -> anyhow::Result<ExitCode> {
    let mut request = kubelan_forward::check_request(
        &args.targets,
        &args.namespace,
        &args.address,
        args.selector.is_some(),
        args.no_hosts,
    )?;
    let bulk = request.bulk();
    let cc = kubelan_forward::connect(&args.kube, &mut request).await?;
    let mut hosts_block = if bulk && !args.no_hosts {
        let cleaned = |report: &kubelan_sys::journal::ResetReport| {
            eprintln!("cleaned up after an earlier kubelan that did not exit:");
            for l in report.lines() {
                eprintln!("  {l}");
            }
        };
        let block = HostsBlock::prepare(&args.hosts_file, &cleaned).await?;
        // Removes the block if this process dies without doing so (`kill -9`).
        let watcher = crate::watcher::start(&block.guard);
        Some((block, watcher))
    } else {
        None
    };
    let (events, mut rx) = Events::channel(4096);
    let opts = Options {
        addresses: request.addresses.clone(),
        pod_wait: Duration::from_secs(args.pod_timeout.max(1)),
        open_timeout: Duration::from_secs(10),
        cluster_domain: args.cluster_domain.clone(),
    };
    let selector = args.selector.as_deref();
    let running = match kubelan_forward::start_request(&cc, &request, selector, opts, events).await
    {
        Ok(r) => r,
        Err(e) => {
            if let Some((h, _watcher)) = hosts_block {
                h.guard.restore().await;
            }
            return Err(e.into());
        }
    };
    let mut ui = Ui {
        screen: Screen::new(args.output == Output::Json),
        bulk_no_hosts: bulk && args.no_hosts,
    };
    let mut names: Option<watch::Receiver<Vec<HostsEntry>>> = running.names.clone();
    let mut ready = false;
    let mut redraw = tokio::time::interval(Duration::from_secs(1));
    let mut stats = tokio::time::interval(Duration::from_secs(5));
    let shutdown = kubelan_sys::process::shutdown_signal();
    tokio::pin!(shutdown);
    let mut exit = ExitCode::SUCCESS;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            e = rx.recv() => {
                let Some(e) = e else { break };
                if matches!(e, Event::Ready { .. }) {
                    ready = true;
                    if let (Some((h, _)), Some(n)) = (hosts_block.as_mut(), names.as_mut()) {
                        let entries = n.borrow_and_update().clone();
                        match h.publish(&entries) {
                            Ok(hosts) => ui.event(&hosts, &running),
                            Err(err) => {
                                // Without names bulk mode is half done: stop and say why.
                                eprintln!("error: cannot write names to {}: {err}", h.path.display());
                                exit = ExitCode::FAILURE;
                                break;
                            }
                        }
                    }
                }
                ui.event(&e, &running);
            }
            alive = names_changed(&mut names), if ready && hosts_block.is_some() => {
                if !alive {
                    names = None;
                    continue;
                }
                // Let a burst of changes settle into one write.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let entries = names.as_mut().map(|n| n.borrow_and_update().clone()).unwrap_or_default();
                if let Some((h, _)) = hosts_block.as_mut() {
                    let shown = h.publish(&entries).unwrap_or_else(|err| Event::Warning {
                        message: format!("cannot update names in {}: {err}", h.path.display()),
                    });
                    ui.event(&shown, &running);
                }
            }
            _ = redraw.tick() => ui.draw(&running),
            _ = stats.tick() => ui.stats(&running, "stats"),
        }
    }
    ui.draw(&running);
    ui.stats(&running, "stopped");
    let totals = running.registry.totals();
    running.stop().await;
    if let Some((h, _watcher)) = hosts_block {
        let path = h.path.clone();
        let report = h.guard.restore().await;
        if report.is_clean() {
            if ui.screen.mode != Mode::Json {
                eprintln!("removed kubelan's names from {}", path.display());
            }
        } else {
            eprintln!("{report}");
            eprintln!("run `sudo kubelan reset` to retry");
            exit = ExitCode::FAILURE;
        }
    }
    if ui.screen.mode != Mode::Json {
        eprintln!(
            "stopped: {} connection(s) over {} API connection(s)",
            totals.connections, totals.api_connections
        );
    }
    Ok(exit)
}
