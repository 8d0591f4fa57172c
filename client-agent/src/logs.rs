//! Task logs: each task writes its stdout and stderr into FIFOs
//! (`alloc/logs/.<task>.stdout.fifo`, as Nomad names them); the agent pumps
//! them into rotated files `alloc/logs/<task>.stdout.<n>`.
//!
//! FIFOs rather than pipes so that a task survives the agent: the task's
//! shim keeps the FIFOs open, so writes never fail with `EPIPE` while the
//! agent is down (they block once the pipe buffer, raised to 1 MiB, is full),
//! and a restarted agent reopens the FIFOs and carries on.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use proto::model::{LogConfig, DEFAULT_LOG_MAX_FILES, DEFAULT_LOG_MAX_FILE_SIZE_MB};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Writes a stream into `<dir>/<base>.<n>`, moving to `n + 1` when a file
/// reaches `max_bytes` and deleting files older than the last `max_files`.
#[derive(Debug)]
pub struct FileRotator {
    dir: PathBuf,
    base: String,
    max_files: u64,
    max_bytes: u64,
    index: u64,
    size: u64,
    file: Option<File>,
}

impl FileRotator {
    /// A rotator continuing after the highest existing `<base>.<n>`.
    pub fn new(dir: &Path, base: &str, max_files: u64, max_bytes: u64) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let index = log_indexes(dir, base).last().copied().unwrap_or(0);
        let mut r = Self {
            dir: dir.to_path_buf(),
            base: base.to_string(),
            max_files: max_files.max(1),
            max_bytes: max_bytes.max(1),
            index,
            size: 0,
            file: None,
        };
        r.open()?;
        Ok(r)
    }

    /// From a task's log settings (Nomad's defaults: 10 files of 10 MB).
    pub fn for_task(dir: &Path, base: &str, cfg: &LogConfig) -> io::Result<Self> {
        let files = if cfg.max_files > 0 {
            cfg.max_files
        } else {
            DEFAULT_LOG_MAX_FILES
        };
        let mb = if cfg.max_file_size_mb > 0 {
            cfg.max_file_size_mb
        } else {
            DEFAULT_LOG_MAX_FILE_SIZE_MB
        };
        Self::new(dir, base, files as u64, mb as u64 * 1024 * 1024)
    }

    fn path(&self, index: u64) -> PathBuf {
        self.dir.join(format!("{}.{}", self.base, index))
    }

    fn open(&mut self) -> io::Result<()> {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(self.index))?;
        self.size = f.metadata()?.len();
        self.file = Some(f);
        Ok(())
    }

    /// The index of the file being written.
    pub fn current_index(&self) -> u64 {
        self.index
    }

    /// Appends `data`, rotating as needed.
    pub fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            if self.size >= self.max_bytes {
                self.rotate()?;
            }
            let room = (self.max_bytes - self.size) as usize;
            let n = room.min(data.len());
            let file = match &mut self.file {
                Some(f) => f,
                None => {
                    self.open()?;
                    self.file.as_mut().expect("opened")
                }
            };
            file.write_all(&data[..n])?;
            self.size += n as u64;
            data = &data[n..];
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        self.index += 1;
        self.open()?;
        self.purge();
        Ok(())
    }

    fn purge(&self) {
        for i in log_indexes(&self.dir, &self.base) {
            if i + self.max_files <= self.index {
                let _ = std::fs::remove_file(self.path(i));
            }
        }
    }
}

/// The indexes `n` of the files `<base>.<n>` in `dir`, ascending.
pub fn log_indexes(dir: &Path, base: &str) -> Vec<u64> {
    let prefix = format!("{base}.");
    let mut v: Vec<u64> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name();
                    let name = name.to_str()?;
                    name.strip_prefix(&prefix)?.parse::<u64>().ok()
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

/// The FIFO a task's `stream` (`stdout`/`stderr`) goes through.
pub fn fifo_path(logs_dir: &Path, task: &str, stream: &str) -> PathBuf {
    logs_dir.join(format!(".{task}.{stream}.fifo"))
}

/// Creates the FIFO at `path` unless it exists.
pub fn ensure_fifo(path: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::FileTypeExt;
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if m.file_type().is_fifo() {
            return Ok(());
        }
        std::fs::remove_file(path)?;
    }
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::other("path with NUL"))?;
    // SAFETY: valid C string.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Raises a pipe's buffer (best effort).
pub fn grow_pipe(fd: i32, bytes: i32) {
    // SAFETY: fcntl on a descriptor we own; failure is harmless.
    unsafe {
        libc::fcntl(fd, libc::F_SETPIPE_SZ, bytes);
    }
}

/// Opens the write side of a FIFO for a task's stdout/stderr: blocking
/// writes, and no blocking open (a reader is normally there; without one the
/// FIFO is opened read-write so the open cannot hang).
pub fn open_fifo_writer(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = match OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
            OpenOptions::new().read(true).write(true).open(path)?
        }
        Err(e) => return Err(e),
    };
    let fd = f.as_raw_fd();
    // SAFETY: fcntl on our descriptor.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
    Ok(f)
}

/// The pumps of one task's two streams.
pub struct LogPumps {
    stop: watch::Sender<bool>,
    joins: Vec<JoinHandle<()>>,
    /// FIFO of stdout.
    pub stdout_fifo: PathBuf,
    /// FIFO of stderr.
    pub stderr_fifo: PathBuf,
}

impl LogPumps {
    /// Creates the FIFOs of `task` in `logs_dir` and starts pumping them into
    /// rotated files.
    pub fn start(logs_dir: &Path, task: &str, cfg: &LogConfig) -> io::Result<Self> {
        let (stop, stop_rx) = watch::channel(false);
        let mut joins = Vec::new();
        let mut fifos = Vec::new();
        for stream in ["stdout", "stderr"] {
            let fifo = fifo_path(logs_dir, task, stream);
            ensure_fifo(&fifo)?;
            let rx = tokio::net::unix::pipe::OpenOptions::new()
                .read_write(true)
                .open_receiver(&fifo)?;
            grow_pipe(rx.as_raw_fd(), 1 << 20);
            let rot = FileRotator::for_task(logs_dir, &format!("{task}.{stream}"), cfg)?;
            joins.push(tokio::spawn(pump(rx, rot, stop_rx.clone())));
            fifos.push(fifo);
        }
        let stderr_fifo = fifos.pop().expect("two");
        let stdout_fifo = fifos.pop().expect("two");
        Ok(Self {
            stop,
            joins,
            stdout_fifo,
            stderr_fifo,
        })
    }

    /// Copies what is left in the FIFOs and stops.
    pub async fn finish(mut self) {
        let _ = self.stop.send_replace(true);
        for j in self.joins.drain(..) {
            let _ = j.await;
        }
    }
}

impl Drop for LogPumps {
    fn drop(&mut self) {
        for j in &self.joins {
            j.abort();
        }
    }
}

async fn pump(
    rx: tokio::net::unix::pipe::Receiver,
    mut rot: FileRotator,
    mut stop: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            r = rx.readable() => {
                if r.is_err() {
                    return;
                }
                match rx.try_read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        if let Err(e) = rot.write(&buf[..n]) {
                            tracing::warn!(error = %e, "writing task log");
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
            _ = stop.changed() => {
                // Drain what is buffered, then stop.
                loop {
                    match rx.try_read(&mut buf) {
                        Ok(0) => return,
                        Ok(n) => {
                            let _ = rot.write(&buf[..n]);
                        }
                        Err(_) => return,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(dir: &Path, name: &str) -> String {
        std::fs::read_to_string(dir.join(name)).unwrap_or_default()
    }

    #[test]
    fn rotates_and_purges() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = FileRotator::new(dir.path(), "web.stdout", 3, 10).unwrap();
        r.write(b"0123456789abcde").unwrap();
        assert_eq!(read(dir.path(), "web.stdout.0"), "0123456789");
        assert_eq!(read(dir.path(), "web.stdout.1"), "abcde");
        r.write(b"fghijklmnopqrstuvwxyz").unwrap();
        // 36 bytes in 10-byte files: indexes 0..=3, only the last 3 kept.
        assert_eq!(log_indexes(dir.path(), "web.stdout"), vec![1, 2, 3]);
        assert_eq!(read(dir.path(), "web.stdout.3"), "uvwxyz");
        drop(r);
        // A new rotator continues in the last file.
        let mut r = FileRotator::new(dir.path(), "web.stdout", 3, 10).unwrap();
        assert_eq!(r.current_index(), 3);
        r.write(b"1234").unwrap();
        assert_eq!(read(dir.path(), "web.stdout.3"), "uvwxyz1234");
        r.write(b"!").unwrap();
        assert_eq!(read(dir.path(), "web.stdout.4"), "!");
        assert_eq!(log_indexes(dir.path(), "web.stdout"), vec![2, 3, 4]);
    }

    #[tokio::test]
    async fn pumps_fifo_into_files() {
        let dir = tempfile::tempdir().unwrap();
        let pumps = LogPumps::start(dir.path(), "web", &LogConfig::default()).unwrap();
        {
            let mut w = open_fifo_writer(&pumps.stdout_fifo).unwrap();
            w.write_all(b"hello\n").unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        pumps.finish().await;
        assert_eq!(read(dir.path(), "web.stdout.0"), "hello\n");
        assert_eq!(read(dir.path(), "web.stderr.0"), "");
    }
}
