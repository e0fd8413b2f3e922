//! The `install`, `uninstall` and `rbac` commands: arguments, progress display and summaries.
//! The binary crate only parses and dispatches.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use ipnet::IpNet;

use crate::install::{
    self, InstallEvent, InstallOptions, InstallReport, ObjectOutcome, Outcome, ServiceType,
    UninstallReport,
};
use crate::kubeconfig::{KubeconfigArgs, connect};
use crate::names::{DEFAULT_IMAGE, DEFAULT_NAMESPACE};
use crate::preflight;
use crate::rbac::{self, RbacMode};

/// `kubelan install`: install or update the in-cluster agent.
#[derive(Args, Debug, Clone)]
pub struct InstallArgs {
    /// Kubeconfig and context (the binary's global flags).
    #[arg(skip)]
    pub kube: KubeconfigArgs,
    /// Namespace for the agent (created with Pod Security `restricted` when missing): the
    /// global `-n`, else [`DEFAULT_NAMESPACE`].
    #[arg(skip = DEFAULT_NAMESPACE.to_string())]
    pub namespace: String,
    /// Number of agent replicas.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(0..=100))]
    pub replicas: i32,
    /// Agent image (kubelan's own image, matching this client's version).
    #[arg(long, value_name = "IMAGE", default_value = DEFAULT_IMAGE)]
    pub image: String,
    /// How the agent's Service is exposed to clients outside the cluster.
    #[arg(long, value_enum, ignore_case = true, default_value = "NodePort")]
    pub service_type: ServiceType,
    /// Run the agent only on nodes with this label (repeatable).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub node_selector: Vec<(String, String)>,
    /// Print the manifests as YAML (for `kubectl apply -f -`) instead of installing; contains
    /// freshly generated private keys.
    #[arg(long)]
    pub dry_run: bool,
    /// How long to wait for the agent to become ready (seconds, or e.g. `2m`).
    #[arg(long, value_name = "DURATION", default_value = "120", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Let the agent also dial this prefix (repeatable; node addresses in it included).
    /// By default it dials only the cluster's pods, Services and DNS.
    #[arg(long, value_name = "CIDR")]
    pub allow: Vec<IpNet>,
    /// Let the agent dial node addresses (nodes' IPs, hostNetwork pods, the API server's
    /// endpoints) on every port. Installing again without it takes it away.
    #[arg(long)]
    pub allow_node_addresses: bool,
}

impl InstallArgs {
    /// The install options these arguments describe.
    pub fn options(&self) -> InstallOptions {
        InstallOptions {
            namespace: self.namespace.clone(),
            replicas: self.replicas,
            image: self.image.clone(),
            service_type: self.service_type,
            node_selector: self
                .node_selector
                .iter()
                .cloned()
                .collect::<BTreeMap<_, _>>(),
            timeout: self.timeout,
            allow: self.allow.iter().map(IpNet::trunc).collect(),
            allow_node_addresses: self.allow_node_addresses,
        }
    }
}

/// `kubelan uninstall`: remove the agent and everything `kubelan install` created.
#[derive(Args, Debug, Clone)]
pub struct UninstallArgs {
    /// Kubeconfig and context (the binary's global flags).
    #[arg(skip)]
    pub kube: KubeconfigArgs,
    /// Namespace the agent was installed in: the global `-n`, else [`DEFAULT_NAMESPACE`].
    #[arg(skip = DEFAULT_NAMESPACE.to_string())]
    pub namespace: String,
    /// How long to wait for the agent's pods (and a namespace install created) to be gone.
    #[arg(long, value_name = "DURATION", default_value = "120", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// `kubelan rbac`: print the RBAC a user needs for a mode.
#[derive(Args, Debug, Clone)]
pub struct RbacArgs {
    /// The mode to print RBAC for; every mode when omitted.
    #[arg(value_enum)]
    pub mode: Option<RbacMode>,
    /// Namespace of the agent (for proxy, connect and install): the global `-n`, else
    /// [`DEFAULT_NAMESPACE`].
    #[arg(skip = DEFAULT_NAMESPACE.to_string())]
    pub namespace: String,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("expected a duration like 90, 90s or 2m, got {s:?}"))?;
    match unit {
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("expected a duration like 90, 90s or 2m, got {s:?}")),
    }
}

/// Shows progress: a spinner with the latest state on a terminal (unless `NO_COLOR`:
/// `kubelan_term`), one line per change otherwise. Object outcomes are always printed as lines.
struct Display {
    bar: Option<ProgressBar>,
    last: Mutex<String>,
}

impl Display {
    fn new() -> Self {
        let bar = kubelan_term::stderr().is_rich().then(|| {
            let b = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
                b.set_style(style);
            }
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        Self {
            bar,
            last: Mutex::new(String::new()),
        }
    }

    fn event(&self, e: InstallEvent) {
        let line = e.to_string();
        let permanent = matches!(e, InstallEvent::Object(_) | InstallEvent::Ready { .. });
        match &self.bar {
            Some(b) if permanent => b.println(format!("  {line}")),
            Some(b) => b.set_message(line),
            None => {
                let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
                if *last != line {
                    eprintln!("  {line}");
                    *last = line;
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

fn summarize(objects: &[ObjectOutcome]) -> String {
    let mut parts = Vec::new();
    for outcome in [
        Outcome::Created,
        Outcome::Updated,
        Outcome::Unchanged,
        Outcome::Deleted,
    ] {
        let names: Vec<String> = objects
            .iter()
            .filter(|o| o.outcome == outcome)
            .map(|o| format!("{} {}", o.kind, o.name))
            .collect();
        if !names.is_empty() {
            parts.push(format!("{outcome} {}", names.join(", ")));
        }
    }
    parts.join("; ")
}

/// The final lines of an install.
pub fn install_summary(r: &InstallReport) -> String {
    let pods: Vec<String> = r
        .pods
        .iter()
        .map(|p| {
            let mut s = p.name.clone();
            if let Some(n) = &p.node {
                s.push_str(&format!(" on {n}"));
            }
            if let Some(ip) = p.ip {
                s.push_str(&format!(" ({ip})"));
            }
            s
        })
        .collect();
    let ready = if pods.is_empty() {
        "no replicas requested".to_string()
    } else {
        pods.join(", ")
    };
    format!(
        "{}\nagent ready in {:.1} s: {ready}",
        summarize(&r.objects),
        r.ready_after.as_secs_f64()
    )
}

/// The final lines of an uninstall.
pub fn uninstall_summary(r: &UninstallReport) -> String {
    let mut s = if r.deleted.is_empty() {
        format!(
            "nothing to remove: no kubelan agent objects in namespace {}",
            r.namespace
        )
    } else {
        format!(
            "{} in {:.1} s",
            summarize(&r.deleted),
            r.elapsed.as_secs_f64()
        )
    };
    if let Some(why) = &r.namespace_kept {
        s.push_str(&format!("\nnamespace {} kept: {why}", r.namespace));
    }
    s
}

/// Runs `kubelan install`.
///
/// # Errors
/// What [`install::install`] or [`connect`] report; their messages name the fix.
pub async fn run_install(args: InstallArgs) -> anyhow::Result<()> {
    let opts = args.options();
    if args.dry_run {
        print!("{}", install::to_yaml(&opts)?);
        return Ok(());
    }
    let cluster = connect(&args.kube.with_namespace(&opts.namespace)).await?;
    eprintln!(
        "installing the kubelan agent into namespace {} (context {}, {})",
        opts.namespace, cluster.context, cluster.server
    );
    let display = Display::new();
    let result = install::install(&cluster.client, &opts, &|e| display.event(e)).await;
    display.finish();
    let report = result.map_err(|e| cluster.explain(e, preflight::INSTALL_HINT))?;
    println!("{}", install_summary(&report));
    Ok(())
}

/// Runs `kubelan uninstall`.
///
/// # Errors
/// What [`install::uninstall`] or [`connect`] report.
pub async fn run_uninstall(args: UninstallArgs) -> anyhow::Result<()> {
    let cluster = connect(&args.kube.with_namespace(&args.namespace)).await?;
    eprintln!(
        "removing the kubelan agent from namespace {} (context {}, {})",
        args.namespace, cluster.context, cluster.server
    );
    let display = Display::new();
    let result = install::uninstall(&cluster.client, &args.namespace, args.timeout, &|e| {
        display.event(e)
    })
    .await;
    display.finish();
    let report = result.map_err(|e| cluster.explain(e, preflight::INSTALL_HINT))?;
    println!("{}", uninstall_summary(&report));
    Ok(())
}

/// Runs `kubelan rbac`: prints the RBAC YAML.
///
/// # Errors
/// Never; the signature matches the other commands.
pub fn run_rbac(args: RbacArgs) -> anyhow::Result<()> {
    let text = match args.mode {
        Some(m) => rbac::user_rbac_in(m, &args.namespace),
        None => rbac::all_user_rbac(&args.namespace),
    };
    print!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: Cmd,
    }

    #[derive(clap::Subcommand)]
    enum Cmd {
        Install(InstallArgs),
        Uninstall(UninstallArgs),
        Rbac(RbacArgs),
    }

    #[test]
    fn install_args_parse_with_defaults() {
        let Cli {
            cmd: Cmd::Install(a),
        } = Cli::try_parse_from([
            "k",
            "install",
            "--service-type",
            "loadbalancer",
            "--node-selector",
            "role=edge",
            "--timeout",
            "2m",
        ])
        .unwrap()
        else {
            panic!()
        };
        let o = a.options();
        assert_eq!(o.namespace, "kubelan-system");
        assert_eq!(o.replicas, 1);
        assert_eq!(o.service_type, ServiceType::LoadBalancer);
        assert_eq!(o.node_selector["role"], "edge");
        assert_eq!(o.timeout, Duration::from_secs(120));
        assert!(o.image.starts_with("ghcr.io/kubelan/kubelan:"));
        assert!(Cli::try_parse_from(["k", "install", "--node-selector", "x"]).is_err());
        // `-n` is the binary's global flag (its tests cover install's namespace).
        assert!(Cli::try_parse_from(["k", "uninstall", "-n", "x"]).is_err());
        let Cli { cmd: Cmd::Rbac(r) } = Cli::try_parse_from(["k", "rbac", "forward"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(r.mode, Some(RbacMode::Forward));
        Cli::command_for_test();
    }

    impl Cli {
        fn command_for_test() {
            use clap::CommandFactory;
            Self::command().debug_assert();
        }
    }

    #[test]
    fn summaries_read_well() {
        let r = InstallReport {
            namespace: "kubelan-system".into(),
            objects: vec![
                ObjectOutcome {
                    kind: "namespace",
                    name: "kubelan-system".into(),
                    outcome: Outcome::Created,
                },
                ObjectOutcome {
                    kind: "deployment",
                    name: "kubelan-agent".into(),
                    outcome: Outcome::Unchanged,
                },
            ],
            pods: vec![crate::agent::AgentPod {
                name: "kubelan-agent-x".into(),
                ip: Some("172.17.32.5".parse().unwrap()),
                node: Some("node1".into()),
            }],
            ready_after: Duration::from_millis(1400),
        };
        assert_eq!(
            install_summary(&r),
            "created namespace kubelan-system; unchanged deployment kubelan-agent\nagent ready in 1.4 s: kubelan-agent-x on node1 (172.17.32.5)"
        );
    }
}
