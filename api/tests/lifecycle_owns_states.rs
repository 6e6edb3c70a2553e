//! Only `api/src/lifecycle/` writes the state of captures, watchers and operations: a statement
//! that changes them anywhere else fails this test (move it into a lifecycle event function).

use std::path::{Path, PathBuf};

/// What writes a capture's, a watcher's or an operation's state, in diesel or in SQL.
const STATE_WRITES: &[&str] = &[
    "update(packet_captures",
    "insert_into(packet_captures",
    "delete(packet_captures",
    "update(operations",
    "insert_into(operations",
    "network_watchers::provisioning_state.eq",
    "UPDATE packet_captures",
    "INSERT INTO packet_captures",
    "DELETE FROM packet_captures",
    "UPDATE operations",
    "INSERT INTO operations",
    "DELETE FROM network_watchers",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn state_is_written_only_by_the_lifecycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lifecycle = src.join("lifecycle");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 20, "found the sources: {files:?}");
    let mut offenders = Vec::new();
    for file in files.iter().filter(|f| !f.starts_with(&lifecycle)) {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            if let Some(w) = STATE_WRITES.iter().find(|w| line.contains(*w)) {
                offenders.push(format!("{}:{}: {w}", file.display(), n + 1));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "state written outside api/src/lifecycle/:\n{}",
        offenders.join("\n")
    );
    // The lifecycle itself does write them (the patterns are live).
    let mut own = Vec::new();
    rust_files(&lifecycle, &mut own);
    let all: String = own
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap_or_default())
        .collect();
    for w in [
        "update(packet_captures",
        "UPDATE operations",
        "DELETE FROM packet_captures",
    ] {
        assert!(all.contains(w), "the lifecycle no longer contains {w}");
    }
}
