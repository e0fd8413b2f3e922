//! `kubelan doctor`: the flags, and the rendering of the checks `kubelan-doctor` makes
//! (a line per check with its fix, or one JSON document), and the exit code: 0 only when
//! nothing failed.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use kubelan_doctor::{Check, Options, Outcome, Verdict};
use serde_json::json;

use crate::gateway;
use crate::{Output, PrefixArgs};

/// `kubelan doctor` flags.
#[derive(Args, Debug)]
pub(crate) struct DoctorArgs {
    #[command(flatten)]
    kube: kubelan_cluster::KubeArgs,
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
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    output: Output,
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
            print!("{}", render_check(c));
        }
    })
    .await;
    print!("{}", render_end(&outcome, json)?);
    Ok(if outcome.failed() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn mark(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "✓",
        Verdict::Info => "·",
        Verdict::Warn => "!",
        Verdict::Fail => "✗",
        Verdict::Skip => "-",
    }
}

/// One check as printed when it is made: mark, step, what; the fix on the next line.
fn render_check(c: &Check) -> String {
    let mut s = format!("{} {:<10} {}\n", mark(c.verdict), c.step, c.what);
    if let Some(fix) = &c.fix {
        s.push_str(&format!("  {:<10} fix: {fix}\n", ""));
    }
    s
}

/// What ends the report: the summary line, or (JSON) every check in one document.
fn render_end(outcome: &Outcome, json: bool) -> serde_json::Result<String> {
    let failed = outcome.failed();
    Ok(if json {
        format!(
            "{}\n",
            serde_json::to_string_pretty(&json!({"ok": failed == 0, "checks": outcome.checks}))?
        )
    } else if failed == 0 {
        "\nall checks passed\n".to_string()
    } else {
        format!("\n{failed} check(s) failed\n")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every verdict, with and without a fix: the lines as made, the summary of a failed
    /// and of a passed run, and the JSON document (in `tests/render/doctor.txt`).
    #[test]
    fn checks_render_as_their_golden_lines() {
        let check = |step, verdict, what: &str, fix: Option<&str>| Check {
            step,
            verdict,
            what: what.into(),
            fix: fix.map(String::from),
        };
        let checks = vec![
            check(
                "api",
                Verdict::Pass,
                "https://10.4.7.11:6443 answers (Kubernetes 1.33, context lab)",
                None,
            ),
            check(
                "routes",
                Verdict::Info,
                "pods 172.17.32.0/19: via kubelan0 ",
                None,
            ),
            check(
                "dns",
                Verdict::Warn,
                "10.4.7.11 answers names outside the cluster with REFUSED",
                Some("give it a resolver that does"),
            ),
            check(
                "return",
                Verdict::Fail,
                "pods on node1 answer, pods on node2 do not",
                Some("run the gateway with SNAT"),
            ),
            check(
                "callback",
                Verdict::Skip,
                "pass --callback-to PC:PORT",
                None,
            ),
        ];
        let end = |checks: &[Check], json| {
            render_end(
                &Outcome {
                    checks: checks.to_vec(),
                },
                json,
            )
            .unwrap()
        };
        let text = checks.iter().map(render_check).collect::<String>()
            + &end(&checks, false)
            + &end(&checks[..2], false)
            + &end(&checks[2..4], true);
        crate::tests::golden("doctor.txt", &text);
    }
}
