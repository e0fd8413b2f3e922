//! Golden files: expected output checked into the repository next to the test.

use std::path::Path;

/// Compares `actual` with the file at `path`. With `UPDATE_GOLDEN=1` it writes `actual`
/// there instead (review the diff before committing). A difference fails with the first
/// differing line and both texts; `rerun` is the command that rewrites the file.
pub fn check(path: &Path, actual: &str, rerun: &str) {
    if std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().expect("a golden file has a folder")).unwrap();
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}; run UPDATE_GOLDEN=1 {rerun}", path.display()));
    if expected != actual {
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs at line {} (UPDATE_GOLDEN=1 {rerun} rewrites it after review):\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display(),
            line + 1
        );
    }
}
