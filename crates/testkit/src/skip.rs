//! Root-or-skip: the one check every root-only suite starts with.

use std::io::Write;
use std::path::Path;
use std::process::Command;

/// The variable CI sets (to `1`) so that a test that cannot run fails instead of skipping.
pub const REQUIRED_VAR: &str = "KUBELAN_E2E_REQUIRED";

/// Whether a test of `suite` can run here: the process is root, every program in `tools`
/// is on `PATH` and every file in `paths` exists.
///
/// When it cannot, this prints a `SKIP` line that says why and returns `false`; under
/// `KUBELAN_E2E_REQUIRED=1` (CI) it panics instead, so that a machine that cannot run the
/// suite fails it rather than passing it silently.
pub fn root_or_skip(suite: &str, tools: &[&str], paths: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !on_path(t)).collect();
    let absent: Vec<&str> = paths
        .iter()
        .copied()
        .filter(|p| !Path::new(p).exists())
        .collect();
    let why = if !nix::unistd::geteuid().is_root() {
        Some("not root".to_string())
    } else if !missing.is_empty() {
        Some(format!("missing {}", missing.join(", ")))
    } else if !absent.is_empty() {
        Some(format!("no {}", absent.join(", ")))
    } else {
        None
    };
    let Some(why) = why else {
        return true;
    };
    if std::env::var(REQUIRED_VAR).is_ok_and(|v| v == "1") {
        panic!("{suite} is required here ({REQUIRED_VAR}=1) but cannot run: {why}");
    }
    let needs: Vec<&str> = tools.iter().chain(paths).copied().collect();
    // Straight to stderr: libtest captures `eprintln!`, and a skip must be visible.
    let _ = writeln!(
        std::io::stderr(),
        "SKIP {suite}: needs root and {} ({why})",
        needs.join(", ")
    );
    false
}

/// [`root_or_skip`] for a test that needs root and iproute2 only.
pub fn root_available(test: &str) -> bool {
    root_or_skip(test, &["ip"], &[])
}

/// Whether `tool` is a program on `PATH`.
fn on_path(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_is_named() {
        // Without root the answer is "not root" whatever else is missing; as root the
        // made-up tool is what is missing. Either way the test is skipped, not run.
        if std::env::var(REQUIRED_VAR).is_ok_and(|v| v == "1") {
            let r = std::panic::catch_unwind(|| {
                root_or_skip("testkit self-test", &["kl-no-such-tool"], &[])
            });
            let msg = *r
                .expect_err("must fail when required")
                .downcast::<String>()
                .unwrap();
            assert!(msg.contains("cannot run"), "{msg}");
        } else {
            assert!(!root_or_skip(
                "testkit self-test",
                &["kl-no-such-tool"],
                &[]
            ));
        }
    }

    #[test]
    fn sh_is_on_path() {
        assert!(on_path("sh"));
        assert!(!on_path("kl-no-such-tool"));
    }
}
