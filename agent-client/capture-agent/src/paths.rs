//! Capture file paths: ARM's `/var/captures/...` mapped under the agent's captures root, with no
//! way out of it.

use std::path::{Path, PathBuf};

/// The folder ARM paths name.
pub const ARM_ROOT: &str = "/var/captures";

/// The folder under the captures root holding storage-only captures until they are uploaded.
pub const SPOOL: &str = ".uploads";

/// Resolves the `filePath` of a capture: [`resolve`], but never inside the spool folder.
pub fn capture_file(root: &Path, arm_path: &str) -> Result<PathBuf, String> {
    let spool = format!("{ARM_ROOT}/{SPOOL}");
    if arm_path == spool || arm_path.starts_with(&format!("{spool}/")) {
        return Err(format!(
            "'{arm_path}' is inside {ARM_ROOT}/{SPOOL}, which the agent keeps for uploads"
        ));
    }
    resolve(root, arm_path)
}

/// The spool file of a storage-only capture (its folder is created 0750).
pub fn spool_file(root: &Path, capture_id: uuid::Uuid) -> Result<PathBuf, String> {
    resolve(root, &format!("{ARM_ROOT}/{SPOOL}/{capture_id}.cap"))
}

/// The files of one capture: its ARM path (`filePath`/`localPath`, kept on the machine) or a
/// spool file (storage only); with `continuous`, the numbered files next to it.
#[derive(Debug, Clone)]
pub struct CaptureFiles {
    root: PathBuf,
    /// The ARM path the capture names (for the spool: `/var/captures/.uploads/{id}.cap`).
    arm: String,
    continuous: bool,
}

impl CaptureFiles {
    /// Checks the capture's own path (not inside the spool, under the root).
    pub fn new(
        root: &Path,
        file_path: Option<&str>,
        capture_id: uuid::Uuid,
        continuous: bool,
    ) -> Result<CaptureFiles, String> {
        let arm = match file_path {
            Some(p) => {
                let spool = format!("{ARM_ROOT}/{SPOOL}");
                if p == spool || p.starts_with(&format!("{spool}/")) {
                    return Err(format!(
                        "'{p}' is inside {ARM_ROOT}/{SPOOL}, which the agent keeps for uploads"
                    ));
                }
                p.to_string()
            }
            None => format!("{ARM_ROOT}/{SPOOL}/{capture_id}.cap"),
        };
        Ok(CaptureFiles {
            root: root.to_path_buf(),
            arm,
            continuous,
        })
    }

    /// The ARM path of file `index` (a single-file capture: its own path).
    pub fn arm_name(&self, index: u32) -> String {
        if self.continuous {
            agent_protocol::file_name(&self.arm, index)
        } else {
            self.arm.clone()
        }
    }

    /// Resolves file `index` under the root, creating its folders; refuses existing files.
    pub fn resolve(&self, index: u32) -> Result<PathBuf, String> {
        resolve(&self.root, &self.arm_name(index))
    }

    /// The real path the capture names, without any check (for the agent's own records).
    pub fn base(&self) -> PathBuf {
        let rel = self
            .arm
            .strip_prefix(ARM_ROOT)
            .map(|r| r.trim_start_matches('/'))
            .unwrap_or(&self.arm);
        self.root.join(rel)
    }
}

/// The real path of file `index` of a continuous capture whose real base path is `base`.
pub fn numbered(base: &Path, index: u32) -> PathBuf {
    PathBuf::from(agent_protocol::file_name(&base.to_string_lossy(), index))
}

/// The numbered files of a continuous capture still on disk, by index.
pub fn numbered_on_disk(base: &Path) -> Vec<(u32, PathBuf)> {
    let (Some(dir), Some(stem)) = (
        base.parent(),
        base.file_name()
            .and_then(|n| n.to_str())
            .map(|n| n.strip_suffix(".cap").unwrap_or(n).to_string()),
    ) else {
        return vec![];
    };
    let prefix = format!("{stem}_");
    let mut files: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name();
            let digits = name.to_str()?.strip_prefix(&prefix)?.strip_suffix(".cap")?;
            if digits.len() < 5 || !digits.chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            Some((digits.parse().ok()?, e.path()))
        })
        .collect();
    files.sort();
    files
}

/// Resolves an ARM capture path to a file under `root`, creating its parent folders (mode 0750).
/// Refuses `..`, paths outside `/var/captures`, symlinks anywhere under the root, and files that
/// already exist (a capture never overwrites another one's file).
pub fn resolve(root: &Path, arm_path: &str) -> Result<PathBuf, String> {
    let rel = arm_path
        .strip_prefix(ARM_ROOT)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(|| format!("'{arm_path}' is not under {ARM_ROOT}"))?;
    if rel
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(format!("'{arm_path}' is not a plain path under {ARM_ROOT}"));
    }
    let root = std::fs::canonicalize(root)
        .map_err(|e| format!("captures root {}: {e}", root.display()))?;
    // Walk down from the root, creating missing folders (0750) and refusing any symlink on the
    // way, so that nothing is ever created outside the root.
    let segments: Vec<&str> = rel.split('/').collect();
    let (file_name, folders) = segments
        .split_last()
        .ok_or_else(|| format!("'{arm_path}' has no file name"))?;
    let mut dir = root.clone();
    for seg in folders {
        dir.push(seg);
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "'{arm_path}' goes through a symbolic link ({})",
                    dir.display()
                ));
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(format!("{} is not a folder", dir.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .mode(0o750)
                    .create(&dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        }
    }
    let file = dir.join(file_name);
    match std::fs::symlink_metadata(&file) {
        Ok(_) => Err(format!("{} already exists", file.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(file),
        Err(e) => Err(format!("{}: {e}", file.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_root() {
        let root = std::env::temp_dir().join(format!("paths-test-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        let ok = resolve(&root, "/var/captures/a/b.cap").unwrap();
        assert!(ok.starts_with(std::fs::canonicalize(&root).unwrap()));
        assert!(ok.parent().unwrap().is_dir());
        for bad in [
            "/var/captures/../etc/x.cap",
            "/tmp/x.cap",
            "/var/captures",
            "/var/capturesx/a.cap",
            "/var/captures/a/./b.cap",
        ] {
            assert!(resolve(&root, bad).is_err(), "{bad}");
        }
        let outside =
            std::env::temp_dir().join(format!("paths-test-outside-{}", std::process::id()));
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
        assert!(resolve(&root, "/var/captures/escape/x.cap").is_err());
        // Nothing was created through the link.
        assert!(resolve(&root, "/var/captures/escape/new/x.cap").is_err());
        assert!(!outside.join("new").exists());
        std::fs::remove_dir_all(&outside).unwrap();
        std::fs::write(root.join("a/exists.cap"), b"x").unwrap();
        assert!(resolve(&root, "/var/captures/a/exists.cap").is_err());
        assert!(capture_file(&root, "/var/captures/.uploads/x.cap").is_err());
        assert!(capture_file(&root, "/var/captures/.uploads").is_err());
        let id = uuid::Uuid::new_v4();
        let spool = spool_file(&root, id).unwrap();
        assert!(
            spool.ends_with(format!(".uploads/{id}.cap")),
            "{}",
            spool.display()
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
