//! The command line does not change by accident: `--help` of `kubelan` and of every
//! subcommand (hidden ones too) is compared with the texts in `tests/help/`.
//!
//! After a deliberate change of the command line, write the new texts with
//! `KUBELAN_BLESS_HELP=1 cargo test -p kubelan --test help` and review the diff.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Subcommands `--help` does not list (hidden), with their parents.
const HIDDEN: &[&[&str]] = &[&["relay"], &["crash-watcher"], &["lab", "daemon"], &["man"]];

/// `kubelan <path> --help`, run with an empty environment so that variables clap shows
/// (`KUBECONFIG`, `KUBELAN_LAB`, …) cannot change the text.
fn help(path: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kubelan"))
        .args(path)
        .arg("--help")
        .env_clear()
        .output()
        .expect("running kubelan");
    assert!(
        out.status.success(),
        "kubelan {} --help failed: {}",
        path.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

/// The subcommands a help text lists under `Commands:` (without `help`).
fn subcommands(text: &str) -> Vec<String> {
    text.lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        // Names are indented by two spaces; wrapped descriptions by more.
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "help")
        .map(str::to_string)
        .collect()
}

fn expected_path(path: &[String]) -> PathBuf {
    let name = if path.is_empty() {
        "kubelan".to_string()
    } else {
        format!("kubelan-{}", path.join("-"))
    };
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/help")
        .join(format!("{name}.txt"))
}

#[test]
fn every_subcommands_help_is_unchanged() {
    let bless = std::env::var_os("KUBELAN_BLESS_HELP").is_some();
    let mut todo: Vec<Vec<String>> = vec![Vec::new()];
    todo.extend(
        HIDDEN
            .iter()
            .map(|p| p.iter().map(|s| s.to_string()).collect()),
    );
    let mut seen = 0;
    let mut failures = Vec::new();
    while let Some(path) = todo.pop() {
        let args: Vec<&str> = path.iter().map(String::as_str).collect();
        let text = help(&args);
        for sub in subcommands(&text) {
            let mut p = path.clone();
            p.push(sub);
            todo.push(p);
        }
        let file = expected_path(&path);
        seen += 1;
        if bless {
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, &text).unwrap();
            continue;
        }
        match std::fs::read_to_string(&file) {
            Ok(want) if want == text => {}
            Ok(want) => failures.push(format!(
                "`kubelan {} --help` differs from {}:\n--- expected\n{want}\n--- got\n{text}",
                args.join(" "),
                file.display()
            )),
            Err(e) => failures.push(format!("{}: {e}", file.display())),
        }
    }
    // kubelan and its subcommands, lab's and serve's: a parse that finds none is broken.
    assert!(seen > 25, "only {seen} help texts found");
    let files = std::fs::read_dir(expected_path(&[]).parent().unwrap())
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(
        files, seen,
        "tests/help holds texts of subcommands that no longer exist"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
