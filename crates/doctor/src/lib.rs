//! `kubelan doctor`'s checks: the path from this machine (a gateway, a node, a laptop with
//! `connect`, or a LAN PC with `--via GATEWAY`) into the cluster, step by step, each
//! verdict with its fix.
//!
//! The checks, in order: the API server and permissions → the discovered prefixes and
//! where they came from → this host's routes to them → on a gateway: forwarding, the SNAT
//! rule and its counters → DNS (a cluster name and a non-cluster name) → one pod on each
//! node, the cluster DNS ClusterIP and one Service → large packets (MTU) → the return-path
//! fault of seed 001 (works to pods on one node, fails to pods on another) → on a LAN (a PC
//! with `--via`, or a node-mode gateway): callbacks from pods on every node to a LAN host,
//! and which address pods see for LAN hosts. Nothing failed when [`Outcome::failed`] is 0.
//!
//! [`run`] gathers the facts (API reads through `kubelan-cluster`, the host's routes,
//! redirects, sysctls, nft counters and pings through `kubelan-sys`) and decides each
//! verdict in functions that do no I/O, unit-tested beside them. It returns
//! [`Check`]s, handed to a callback as they are made; each check's text is its line (and
//! its fix's), the [`Outcome`]'s text is the summary and its JSON the whole report; the
//! binary prints them. [`serve_probe`] is the other side of the
//! callback check: what `kubelan doctor --probe-serve` runs inside a probe pod.

mod callback;
mod dns;
#[cfg(any(fuzzing, feature = "fuzz"))]
pub mod fuzz_entry;
mod network;
mod pods;
mod reach;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use kubelan_cluster::ClusterError;
use kubelan_cluster::discovery::{self, DiscoveryOverrides, PrefixKind};
use kubelan_cluster::preflight::{Access, DISCOVERY_HINT};
use nftables::types::NfFamily;
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

pub use callback::serve_probe;
use reach::Probe;

/// What to check and how: the flags of `kubelan doctor`.
#[derive(Debug, Clone)]
pub struct Options {
    /// The cluster (kubeconfig, context, namespace for the probe pods).
    pub kube: kubelan_cluster::KubeArgs,
    /// Run from a LAN host: the gateway's address (its DNS is checked, and failures are
    /// read as the router's or the gateway's).
    pub via: Option<IpAddr>,
    /// DNS server to check; default `via`, else the local gateway's, else this host's
    /// first resolver.
    pub dns: Option<IpAddr>,
    /// The cluster's Service CIDRs, instead of discovering them.
    pub service_cidrs: Vec<ipnet::IpNet>,
    /// The cluster's Pod CIDRs, instead of discovering them.
    pub pod_cidrs: Vec<ipnet::IpNet>,
    /// The cluster DNS domain; default discovered, else `cluster.local`.
    pub cluster_domain: Option<String>,
    /// How long each connection attempt may take (at least a second).
    pub timeout: Duration,
    /// A LAN host's listening port that probe pods dial to check callbacks (pod → LAN).
    pub callback_to: Option<SocketAddr>,
    /// Do not start probe pods.
    pub skip_callback: bool,
    /// Image of the probe pods; default the installed agent's, else this version's.
    pub probe_image: Option<String>,
    /// The nftables table (family `ip`) of a node-mode gateway: when it exists, this host
    /// is a gateway and its forwarding, SNAT rule and counters are checked.
    pub gateway_table: String,
}

/// How a check went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// It works.
    Pass,
    /// Worth knowing, neither good nor bad.
    Info,
    /// Works now, but something is off.
    Warn,
    /// Broken; the fix says what to do.
    Fail,
    /// Not checked (and why).
    Skip,
}

/// One verdict: the step (`api`, `routes`, `dns`, `pods`, …), what was found and the fix.
/// Its text is the line printed when it is made (mark, step, what) and the fix on a second
/// line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// The step, a short word.
    pub step: &'static str,
    /// How it went.
    pub verdict: Verdict,
    /// What was found, one sentence.
    pub what: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// Every verdict of one run, in order. Its text is the summary line; its JSON is the
/// report (`ok`, and every check).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The checks.
    pub checks: Vec<Check>,
}

impl Outcome {
    /// How many checks failed.
    pub fn failed(&self) -> usize {
        self.checks
            .iter()
            .filter(|c| c.verdict == Verdict::Fail)
            .count()
    }
}

impl Verdict {
    /// The verdict's mark at the start of its line.
    fn mark(self) -> &'static str {
        match self {
            Verdict::Pass => "✓",
            Verdict::Info => "·",
            Verdict::Warn => "!",
            Verdict::Fail => "✗",
            Verdict::Skip => "-",
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:<10} {}", self.verdict.mark(), self.step, self.what)?;
        match &self.fix {
            Some(fix) => write!(f, "\n  {:<10} fix: {fix}", ""),
            None => Ok(()),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.failed() {
            0 => f.write_str("all checks passed"),
            n => write!(f, "{n} check(s) failed"),
        }
    }
}

impl kubelan_term::json::Document for Outcome {
    const TYPE: &'static str = "DoctorReport";
}

impl Serialize for Outcome {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut doc = s.serialize_struct("Outcome", 2)?;
        doc.serialize_field("ok", &(self.failed() == 0))?;
        doc.serialize_field("checks", &self.checks)?;
        doc.end()
    }
}

/// The verdicts so far, each passed on as it is added.
pub(crate) struct Report<'a> {
    checks: Vec<Check>,
    on_check: &'a (dyn Fn(&Check) + Send + Sync),
}

impl Report<'_> {
    pub(crate) fn add(
        &mut self,
        step: &'static str,
        verdict: Verdict,
        what: String,
        fix: Option<String>,
    ) {
        let c = Check {
            step,
            verdict,
            what,
            fix,
        };
        (self.on_check)(&c);
        self.checks.push(c);
    }

    /// A failed step whose error names its own fix: the cause, then the fix on its line.
    fn fail_with(&mut self, step: &'static str, e: &ClusterError) {
        let (what, fix) = split_fix(&e.to_string());
        self.add(step, Verdict::Fail, what, fix);
    }

    fn outcome(self) -> Outcome {
        Outcome {
            checks: self.checks,
        }
    }
}

/// An error's text as the cause and its fix (the part after the first `; `).
fn split_fix(text: &str) -> (String, Option<String>) {
    match text.split_once("; ") {
        Some((what, fix)) => (what.to_string(), Some(fix.to_string())),
        None => (text.to_string(), None),
    }
}

/// Runs the checks in order, passing each verdict to `on_check` as it is made (a human
/// report prints it at once: the checks take seconds each), and returns them all.
/// Creates the callback check's probe pods in the namespace and always deletes them.
pub async fn run(opts: &Options, on_check: &(dyn Fn(&Check) + Send + Sync)) -> Outcome {
    let mut r = Report {
        checks: Vec::new(),
        on_check,
    };
    let args = opts;
    let timeout = opts.timeout.max(Duration::from_secs(1));

    // 1. API, credentials and permissions.
    let cc = match kubelan_cluster::connect(&args.kube).await {
        Ok(cc) => cc,
        Err(e) => {
            r.fail_with("kubeconfig", &e);
            return r.outcome();
        }
    };
    match cc.client.apiserver_version().await {
        Ok(v) => r.add(
            "api",
            Verdict::Pass,
            format!(
                "{} answers (Kubernetes {}.{}, context {})",
                cc.server, v.major, v.minor, cc.context
            ),
            None,
        ),
        Err(e) => {
            let e = ClusterError::from_api("get /version", e, &cc.target(), DISCOVERY_HINT);
            r.fail_with("api", &e);
            return r.outcome();
        }
    }
    // `/version` answers anyone; an access review needs credentials the server accepts,
    // so rejected credentials are told apart here, before discovery.
    let wanted = [
        Access::new("list", "", "nodes"),
        Access::new("list", "", "pods"),
        Access::new("list", "", "services"),
        Access::new("list", "discovery.k8s.io", "endpointslices"),
    ];
    match kubelan_cluster::preflight::check(&cc.client, &wanted).await {
        Ok(missing) => {
            r.add(
                "credentials",
                Verdict::Pass,
                format!("accepted (user {}, context {})", cc.user, cc.context),
                None,
            );
            if missing.is_empty() {
                r.add(
                    "access",
                    Verdict::Pass,
                    "may list nodes, pods, Services and EndpointSlices".into(),
                    None,
                );
            } else {
                r.add(
                    "access",
                    Verdict::Warn,
                    format!(
                        "missing: {}; some checks below are skipped",
                        missing
                            .iter()
                            .map(|m| m.access.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    Some("`kubelan rbac discovery` prints a ClusterRole that grants them".into()),
                );
            }
        }
        Err(e) => match cc.explain(e, DISCOVERY_HINT) {
            e @ ClusterError::Unauthorized { .. } => {
                r.fail_with("credentials", &e);
                return r.outcome();
            }
            e @ ClusterError::Unreachable { .. } => {
                r.fail_with("api", &e);
                return r.outcome();
            }
            e => r.add(
                "access",
                Verdict::Warn,
                format!("cannot check permissions: {e}"),
                None,
            ),
        },
    }

    // 2. Prefixes.
    let overrides = DiscoveryOverrides {
        service_cidrs: args.service_cidrs.clone(),
        pod_cidrs: args.pod_cidrs.clone(),
        cluster_domain: args.cluster_domain.clone(),
        dns_server: None,
    };
    let facts = match discovery::discover(&cc, &overrides).await {
        Ok(f) => f,
        Err(e) if e.is_fatal_for_kubeconfig() => {
            r.fail_with("prefixes", &e);
            return r.outcome();
        }
        Err(e) => {
            r.add(
                "prefixes",
                Verdict::Fail,
                format!("discovery failed: {e}"),
                Some("pass --pod-cidr and --service-cidr".into()),
            );
            return r.outcome();
        }
    };
    for (verdict, what, fix) in prefix_findings(&facts) {
        r.add("prefixes", verdict, what, fix);
    }

    // 3. Routes of this host.
    network::check_routes(&mut r, &facts, args.via).await;

    // 4. A gateway on this host.
    let gateway_here = kubelan_sys::nft::table_exists(NfFamily::IP, &opts.gateway_table)
        .await
        .unwrap_or(false);
    let (before, gateway_snat) = if gateway_here {
        let (counters, snat) = network::check_gateway(&mut r, &opts.gateway_table).await;
        (counters, Some(snat))
    } else {
        (None, None)
    };

    // 5. DNS.
    let dns_server = args
        .dns
        .or(args.via)
        .or(network::gateway_dns_listen().await.filter(|_| gateway_here))
        .or_else(dns::first_resolver);
    dns::check_dns(&mut r, &cc, &facts, dns_server, timeout).await;

    // 6. Reachability, 7. MTU, 8. return path.
    let targets = reach::pod_targets(&cc.client).await;
    let mut by_node: BTreeMap<String, Vec<(reach::Target, Probe)>> = BTreeMap::new();
    for t in reach::first_per_node(&targets) {
        // One retry with twice the time, so a busy machine is not taken for a broken path.
        let mut p = reach::probe_tcp(t.addr, timeout).await;
        if p != Probe::Reached {
            p = reach::probe_tcp(t.addr, timeout * 2).await;
        }
        by_node.entry(t.node.clone()).or_default().push((t, p));
    }
    if by_node.is_empty() {
        r.add(
            "pods",
            Verdict::Skip,
            "no ready pod with a TCP port to probe".into(),
            None,
        );
    }
    for (node, probes) in &by_node {
        for (t, p) in probes {
            let ok = *p == Probe::Reached;
            r.add(
                "pods",
                if ok { Verdict::Pass } else { Verdict::Fail },
                format!(
                    "pod {} on {node} at {}: {}",
                    t.name,
                    t.addr,
                    reach::describe(p)
                ),
                (!ok).then(|| reach::unreachable_fix(p, args.via)),
            );
        }
    }
    // Service connections seen so far: (tried, failed), for the return-path check.
    let mut service_tries = (0usize, 0usize);
    if let Some(dns) = facts.dns_server.as_ref().map(|f| f.value) {
        let p = reach::probe_tcp(SocketAddr::new(dns, 53), timeout).await;
        let ok = p == Probe::Reached;
        service_tries = (service_tries.0 + 1, service_tries.1 + usize::from(!ok));
        r.add(
            "services",
            if ok { Verdict::Pass } else { Verdict::Fail },
            format!("cluster DNS ClusterIP {dns}:53: {}", reach::describe(&p)),
            (!ok).then(|| reach::unreachable_fix(&p, args.via)),
        );
    }
    let spread = reach::spread_service(&cc.client, &targets).await;
    if let Some((svc, addr, _)) = &spread {
        let p = reach::probe_tcp(*addr, timeout).await;
        let ok = p == Probe::Reached;
        service_tries = (service_tries.0 + 1, service_tries.1 + usize::from(!ok));
        r.add(
            "services",
            if ok { Verdict::Pass } else { Verdict::Fail },
            format!("Service {svc} at {addr}: {}", reach::describe(&p)),
            (!ok).then(|| reach::unreachable_fix(&p, args.via)),
        );
    }
    network::check_mtu(
        &mut r,
        by_node.values().flatten().map(|(t, _)| t.addr.ip()).next(),
    )
    .await;
    reach::check_return_path(&mut r, &by_node, spread.as_ref(), service_tries, timeout).await;
    // 9. Callbacks, pod → LAN.
    pods::check_callbacks(&mut r, &cc, args, &facts, gateway_snat, timeout).await;

    if let Some(before) = before {
        let after = kubelan_sys::nft::counters(NfFamily::IP, &opts.gateway_table)
            .await
            .unwrap_or_default();
        r.add(
            "counters",
            Verdict::Info,
            counters_moved(&before, &after),
            None,
        );
    }
    r.outcome()
}

/// One line of a step: verdict, what, fix.
type Finding = (Verdict, String, Option<String>);

/// Each discovered prefix with where it came from (a guess is a warning), or a failure
/// when there is none.
fn prefix_findings(facts: &discovery::ClusterFacts) -> Vec<Finding> {
    let mut out: Vec<Finding> = facts
        .prefixes()
        .map(|(kind, f)| {
            (
                if f.guessed { Verdict::Warn } else { Verdict::Pass },
                format!("{kind} {} ({})", f.value, f.source),
                f.guessed.then(|| {
                    // The flags connect, gateway, routes and doctor take.
                    let flag = match kind {
                        PrefixKind::Services => "--service-cidr",
                        PrefixKind::Pods => "--pod-cidr",
                    };
                    format!("confirm it and pass {flag}, or grant what discovery needs (`kubelan rbac discovery`)")
                }),
            )
        })
        .collect();
    if out.is_empty() {
        out.push((
            Verdict::Fail,
            "no Pod or Service prefix found".into(),
            Some("pass --pod-cidr and --service-cidr".into()),
        ));
    }
    out
}

/// Whether the gateway's counters moved between `before` and `after` the checks.
fn counters_moved(
    before: &BTreeMap<String, (u64, u64)>,
    after: &BTreeMap<String, (u64, u64)>,
) -> String {
    let moved = |name: &str| {
        after.get(name).map(|c| c.0).unwrap_or(0) > before.get(name).map(|c| c.0).unwrap_or(0)
    };
    format!(
        "LAN → cluster packets {} during the check, SNAT {} (probes from this host itself do not pass the gateway's rules; run `kubelan doctor --via` on a LAN host to see them move)",
        if moved("up") { "moved" } else { "did not move" },
        if moved("snat") {
            "moved"
        } else {
            "did not move"
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `doctor --output json`: a versioned `DoctorReport` (docs/json.md).
    #[test]
    fn the_report_is_a_versioned_document() {
        use kubelan_term::json::Document;
        let v = Outcome::default().to_document().unwrap();
        assert_eq!(v["apiVersion"], "kubelan.dev/v1");
        assert_eq!(v["type"], "DoctorReport");
        assert_eq!(v["ok"], true);
        assert!(v["checks"].is_array());
    }

    #[test]
    fn prefixes_name_their_source_and_guesses_are_warnings() {
        let mut facts = discovery::from_flags(&DiscoveryOverrides {
            service_cidrs: vec!["172.17.16.0/20".parse().unwrap()],
            ..DiscoveryOverrides::default()
        });
        let f = prefix_findings(&facts);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].0, Verdict::Pass);
        assert!(
            f[0].1.starts_with("services 172.17.16.0/20 ("),
            "{}",
            f[0].1
        );
        assert_eq!(f[0].2, None);
        facts.service_cidrs[0].guessed = true;
        let f = prefix_findings(&facts);
        assert_eq!(f[0].0, Verdict::Warn);
        // The fix names the flag the commands really take (it said `--services-cidr`).
        assert!(
            f[0].2
                .as_deref()
                .unwrap()
                .starts_with("confirm it and pass --service-cidr, ")
        );
        facts.service_cidrs.clear();
        assert_eq!(prefix_findings(&facts)[0].0, Verdict::Fail);
    }

    #[test]
    fn counters_moved_or_not() {
        let before = BTreeMap::from([("up".to_string(), (5, 500)), ("snat".to_string(), (1, 60))]);
        let after = BTreeMap::from([("up".to_string(), (9, 900)), ("snat".to_string(), (1, 60))]);
        assert!(
            counters_moved(&before, &after)
                .starts_with("LAN → cluster packets moved during the check, SNAT did not move (")
        );
    }

    #[test]
    fn an_errors_fix_goes_on_its_own_line() {
        assert_eq!(
            split_fix(
                "the API server rejected the credentials; run `kubectl get nodes`; then retry"
            ),
            (
                "the API server rejected the credentials".to_string(),
                Some("run `kubectl get nodes`; then retry".to_string())
            )
        );
        assert_eq!(split_fix("no fix here"), ("no fix here".to_string(), None));
    }

    #[test]
    fn failures_are_counted_and_each_check_is_passed_on_as_made() {
        let seen = std::sync::Mutex::new(Vec::new());
        let on_check = |c: &Check| seen.lock().unwrap().push(c.step);
        let mut r = Report {
            checks: Vec::new(),
            on_check: &on_check,
        };
        r.add("api", Verdict::Pass, "answers".into(), None);
        r.add(
            "dns",
            Verdict::Fail,
            "no answer".into(),
            Some("start it".into()),
        );
        r.add("mtu", Verdict::Fail, "too small".into(), None);
        let o = r.outcome();
        assert_eq!(o.failed(), 2);
        assert_eq!(*seen.lock().unwrap(), ["api", "dns", "mtu"]);
    }
}
