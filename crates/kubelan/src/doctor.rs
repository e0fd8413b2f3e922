//! `kubelan doctor`: the flags, where the checks `kubelan-doctor` makes are printed (a
//! line per check with its fix as it is made, or one JSON document at the end), and the
//! exit code: 0 only when nothing failed.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use kubelan_doctor::{Check, Options};

use crate::gateway;
use crate::{Output, PrefixArgs};

/// `kubelan doctor` flags.
#[derive(Args, Debug)]
pub(crate) struct DoctorArgs {
    /// The global `--kubeconfig`, `--context` and `-n` (the probe pods' namespace).
    #[arg(skip)]
    pub(crate) kube: kubelan_cluster::KubeArgs,
    /// Run from a LAN host: the gateway's address (its DNS is checked, and failures are
    /// read as the router's or the gateway's).
    #[arg(long, value_name = "GATEWAY")]
    via: Option<IpAddr>,
    /// DNS server to check [default: --via, else the local gateway's, else this host's
    /// first resolver].
    #[arg(long, value_name = "IP")]
    dns: Option<IpAddr>,
    #[command(flatten)]
    prefixes: PrefixArgs,
    /// The cluster DNS domain [default: discovered, else cluster.local].
    #[arg(long, value_name = "DOMAIN")]
    cluster_domain: Option<String>,
    /// Seconds each connection attempt may take.
    #[arg(long, value_name = "SECONDS", default_value_t = 2)]
    timeout: u64,
    /// A LAN host's listening port that probe pods dial to check callbacks (pod → LAN);
    /// on a LAN PC with --via, doctor listens on this PC itself by default.
    #[arg(long, value_name = "ADDR:PORT")]
    callback_to: Option<SocketAddr>,
    /// Do not start probe pods (the callback check creates one short-lived pod per node in
    /// the namespace, and deletes them).
    #[arg(long)]
    skip_callback: bool,
    /// Image of the probe pods [default: the installed agent's, else the agent image of
    /// this version].
    #[arg(long, value_name = "IMAGE")]
    probe_image: Option<String>,
    /// The global `-o`.
    #[arg(skip)]
    pub(crate) output: Output,
    /// Inside a probe pod: answer on this address (what the callback check runs).
    #[arg(long, hide = true, value_name = "ADDR:PORT", requires = "probe_target")]
    probe_serve: Option<SocketAddr>,
    /// Inside a probe pod: the LAN address to dial.
    #[arg(long, hide = true, value_name = "ADDR:PORT")]
    probe_target: Option<SocketAddr>,
    /// Inside a probe pod: the token to send on the dialled connection.
    #[arg(long, hide = true, default_value = "")]
    probe_token: String,
}

impl DoctorArgs {
    /// The library's options; the node-mode gateway's table is named here, where the
    /// gateway lives.
    fn options(&self) -> Options {
        Options {
            kube: self.kube.clone(),
            via: self.via,
            dns: self.dns,
            service_cidrs: self.prefixes.service_cidr.clone(),
            pod_cidrs: self.prefixes.pod_cidr.clone(),
            cluster_domain: self.cluster_domain.clone(),
            timeout: Duration::from_secs(self.timeout.max(1)),
            callback_to: self.callback_to,
            skip_callback: self.skip_callback,
            probe_image: self.probe_image.clone(),
            gateway_table: gateway::TABLE.to_string(),
        }
    }
}

/// Runs the checks (or, inside a probe pod, the probe) and prints them.
pub(crate) async fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    if let (Some(listen), Some(target)) = (args.probe_serve, args.probe_target) {
        let timeout = Duration::from_secs(args.timeout.max(1));
        kubelan_doctor::serve_probe(listen, target, args.probe_token.clone(), timeout).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let json = args.output == Output::Json;
    let outcome = kubelan_doctor::run(&args.options(), &|c: &Check| {
        if !json {
            println!("{c}");
        }
    })
    .await;
    if json {
        // Through a `Value`: its keys print sorted, as they always have.
        let doc = kubelan_term::json::Document::to_document(&outcome)?;
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!("\n{outcome}");
    }
    Ok(if outcome.failed() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
