//! What `kubelan doctor` prints: every verdict with and without a fix (the lines as each
//! check is made), the summary of a failed and of a passed run, and the JSON report —
//! composed as the binary prints them and compared byte for byte with
//! `tests/golden/render.txt`. `UPDATE_GOLDEN=1 cargo test -p kubelan-doctor --test render`
//! rewrites the file; review it by hand when it changes.

use std::path::PathBuf;

use kubelan_doctor::{Check, Outcome, Verdict};
use kubelan_term::json::Document;

#[test]
fn checks_and_outcomes_say_their_golden_lines() {
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
    let outcome = |checks: &[Check]| Outcome {
        checks: checks.to_vec(),
    };
    // The JSON output's key order (sorted), as the binary prints it.
    let json = outcome(&checks[2..4]).to_document().unwrap();
    let text = checks.iter().map(|c| format!("{c}\n")).collect::<String>()
        + &format!("\n{}\n", outcome(&checks))
        + &format!("\n{}\n", outcome(&checks[..2]))
        + &format!("{}\n", serde_json::to_string_pretty(&json).unwrap());
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/render.txt");
    kubelan_testkit::golden::check(&path, &text, "cargo test -p kubelan-doctor --test render");
}
