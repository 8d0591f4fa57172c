//! The allocation directory, laid out like Nomad's:
//!
//! ```text
//! <alloc-dir>/<alloc id>/
//!   alloc/            shared by the group's tasks (NOMAD_ALLOC_DIR)
//!     data/  tmp/
//!     logs/           <task>.stdout.N, <task>.stderr.N, .<task>.stdout.fifo
//!   <task>/
//!     local/          the task's working directory (NOMAD_TASK_DIR)
//!     secrets/        0700 (NOMAD_SECRETS_DIR)
//!     tmp/
//! ```

use std::io;
use std::path::{Component, Path, PathBuf};

/// The directories of one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDirs {
    /// `<alloc-dir>/<alloc id>`.
    pub alloc_root: PathBuf,
    /// `<alloc root>/alloc`, shared by the group.
    pub shared: PathBuf,
    /// `<alloc root>/alloc/logs`.
    pub logs: PathBuf,
    /// `<alloc root>/<task>`.
    pub task: PathBuf,
    /// `<alloc root>/<task>/local`.
    pub local: PathBuf,
    /// `<alloc root>/<task>/secrets`.
    pub secrets: PathBuf,
    /// `<alloc root>/<task>/tmp`.
    pub tmp: PathBuf,
}

/// Write a dispatched job's payload (base64, as the job carries it) to
/// `file` under the task's `local/` directory (Nomad's dispatch payload
/// hook). `file` must stay inside `local/`.
pub fn write_dispatch_payload(dirs: &TaskDirs, file: &str, payload_b64: &str) -> io::Result<()> {
    use base64::Engine as _;
    let rel = Path::new(file);
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("dispatch payload file {file:?} must be a relative path inside local/"),
        ));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload_b64.as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let path = dirs.local.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, bytes)
}

/// The directory of one allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocDir {
    /// `<alloc-dir>/<alloc id>`.
    pub root: PathBuf,
}

impl AllocDir {
    /// The allocation `alloc_id` under `base`.
    pub fn new(base: &Path, alloc_id: &str) -> Self {
        Self {
            root: base.join(alloc_id),
        }
    }

    /// `<root>/alloc`.
    pub fn shared(&self) -> PathBuf {
        self.root.join("alloc")
    }

    /// `<root>/alloc/logs`.
    pub fn logs(&self) -> PathBuf {
        self.shared().join("logs")
    }

    /// The directories of `task` (not created).
    pub fn task_dirs(&self, task: &str) -> TaskDirs {
        let t = self.root.join(task);
        TaskDirs {
            alloc_root: self.root.clone(),
            shared: self.shared(),
            logs: self.logs(),
            local: t.join("local"),
            secrets: t.join("secrets"),
            tmp: t.join("tmp"),
            task: t,
        }
    }

    /// Creates the shared directories.
    pub fn build(&self) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        for d in [
            self.shared().join("data"),
            self.shared().join("tmp"),
            self.logs(),
        ] {
            std::fs::create_dir_all(&d)?;
        }
        std::fs::set_permissions(
            self.shared().join("tmp"),
            std::fs::Permissions::from_mode(0o1777),
        )?;
        Ok(())
    }

    /// Creates the directories of `task` (and the shared ones); when `owner`
    /// is given (uid, gid), the task's directories are handed to it.
    pub fn build_task(&self, task: &str, owner: Option<(u32, u32)>) -> io::Result<TaskDirs> {
        use std::os::unix::fs::PermissionsExt;
        self.build()?;
        let dirs = self.task_dirs(task);
        for d in [&dirs.local, &dirs.secrets, &dirs.tmp] {
            std::fs::create_dir_all(d)?;
        }
        std::fs::set_permissions(&dirs.secrets, std::fs::Permissions::from_mode(0o700))?;
        std::fs::set_permissions(&dirs.tmp, std::fs::Permissions::from_mode(0o1777))?;
        if let Some((uid, gid)) = owner {
            for d in [&dirs.task, &dirs.local, &dirs.secrets, &dirs.tmp] {
                std::os::unix::fs::chown(d, Some(uid), Some(gid))?;
            }
        }
        Ok(dirs)
    }

    /// Removes the whole allocation directory.
    pub fn destroy(&self) -> io::Result<()> {
        match std::fs::remove_dir_all(&self.root) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// `rel` (a path inside the allocation, e.g. `alloc/logs/web.stdout.0`)
    /// resolved under the root, refusing anything that could leave it:
    /// `..` components, and symlinks pointing outside.
    pub fn resolve(&self, rel: &str) -> Result<PathBuf, PathError> {
        let rel = rel.trim_start_matches('/');
        let mut out = self.root.clone();
        for c in Path::new(rel).components() {
            match c {
                Component::Normal(p) => out.push(p),
                Component::CurDir => {}
                Component::ParentDir => return Err(PathError::Escapes),
                Component::RootDir | Component::Prefix(_) => return Err(PathError::Escapes),
            }
        }
        // A symlink inside the allocation must not lead out of it.
        if let (Ok(real), Ok(root)) = (out.canonicalize(), self.root.canonicalize()) {
            if !real.starts_with(&root) {
                return Err(PathError::Escapes);
            }
        }
        Ok(out)
    }
}

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path leaves the allocation directory.
    #[error("path escapes the allocation directory")]
    Escapes,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_confinement() {
        let base = tempfile::tempdir().unwrap();
        let a = AllocDir::new(base.path(), "a1");
        let dirs = a.build_task("web", None).unwrap();
        assert!(dirs.local.is_dir());
        assert!(dirs.secrets.is_dir());
        assert!(a.logs().is_dir());
        assert_eq!(dirs.local, base.path().join("a1/web/local"));
        assert_eq!(a.resolve("alloc/logs").unwrap(), a.logs());
        assert_eq!(a.resolve("/web/local").unwrap(), dirs.local);
        assert_eq!(a.resolve("").unwrap(), a.root);
        assert_eq!(a.resolve("../x"), Err(PathError::Escapes));
        assert_eq!(a.resolve("web/../../x"), Err(PathError::Escapes));
        std::os::unix::fs::symlink("/etc", dirs.local.join("etc")).unwrap();
        assert_eq!(a.resolve("web/local/etc/passwd"), Err(PathError::Escapes));
        a.destroy().unwrap();
        assert!(!a.root.exists());
    }

    #[test]
    fn dispatch_payload_lands_in_local() {
        let base = tempfile::tempdir().unwrap();
        let a = AllocDir::new(base.path(), "a2");
        let dirs = a.build_task("t", None).unwrap();
        write_dispatch_payload(&dirs, "in/put.txt", "aGVsbG8=").unwrap();
        assert_eq!(
            std::fs::read(dirs.local.join("in/put.txt")).unwrap(),
            b"hello"
        );
        assert!(write_dispatch_payload(&dirs, "../escape", "aGVsbG8=").is_err());
        assert!(write_dispatch_payload(&dirs, "/etc/x", "aGVsbG8=").is_err());
        assert!(write_dispatch_payload(&dirs, "bad", "%%%").is_err());
    }
}
