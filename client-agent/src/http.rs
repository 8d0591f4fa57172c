//! The agent's small HTTP server, for the servers to proxy Nomad's client
//! endpoints: task logs, the allocation filesystem, stats, signal, restart.
//!
//! * `GET /v1/client/fs/logs/{alloc}?task=&type=stdout|stderr&follow=&offset=&origin=start|end`
//!   (plain text; `follow` streams until the allocation ends)
//! * `GET /v1/client/fs/ls/{alloc}?path=`, `/v1/client/fs/cat/{alloc}?path=`,
//!   `/v1/client/fs/stat/{alloc}?path=` (paths confined to the allocation
//!   directory)
//! * `GET /v1/client/allocation/{id}/stats`,
//!   `POST /v1/client/allocation/{id}/signal` (`{"Signal", "Task"}`),
//!   `POST /v1/client/allocation/{id}/restart` (`{"TaskName", "AllTasks"}`)
//! * `GET /v1/client/stats`

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::agent::NodeCore;
use crate::allocdir::AllocDir;
use crate::driver::procfs;
use crate::logs::log_indexes;
use crate::util::now_ns;

/// The running HTTP server.
pub struct HttpServer {
    stop: Option<oneshot::Sender<()>>,
    join: JoinHandle<()>,
}

impl HttpServer {
    /// Serves `core` on `listener`.
    pub fn start(listener: tokio::net::TcpListener, core: Arc<NodeCore>) -> Self {
        Self::serve(listener, router(core))
    }

    /// Serves `app` (the [`router`] with more routes or layers) on
    /// `listener`.
    pub fn serve(listener: tokio::net::TcpListener, app: Router) -> Self {
        let (tx, rx) = oneshot::channel::<()>();
        let join = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        Self {
            stop: Some(tx),
            join,
        }
    }

    /// Stops serving (open streams are cut after 1 s).
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let abort = self.join.abort_handle();
        if tokio::time::timeout(Duration::from_secs(1), &mut self.join)
            .await
            .is_err()
        {
            abort.abort();
        }
    }

    /// Stops at once.
    pub fn abort(self) {
        self.join.abort();
    }
}

/// The routes.
pub fn router(core: Arc<NodeCore>) -> Router {
    Router::new()
        .route("/v1/client/fs/logs/{alloc}", get(logs))
        .route("/v1/client/fs/ls/{alloc}", get(ls))
        .route("/v1/client/fs/cat/{alloc}", get(cat))
        .route("/v1/client/fs/stat/{alloc}", get(stat))
        .route("/v1/client/allocation/{id}/stats", get(alloc_stats))
        .route("/v1/client/allocation/{id}/signal", post(signal))
        .route("/v1/client/allocation/{id}/restart", post(restart))
        .route("/v1/client/stats", get(host_stats))
        .with_state(core)
}

fn err(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, msg.into()).into_response()
}

fn truthy(v: Option<&String>) -> bool {
    v.is_some_and(|s| matches!(s.to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
}

type Failure = (StatusCode, String);

fn alloc_dir(core: &NodeCore, id: &str) -> Result<AllocDir, Failure> {
    let Some(base) = &core.alloc_base else {
        return Err((
            StatusCode::NOT_FOUND,
            "this node keeps no allocation directories".into(),
        ));
    };
    if core.allocation(id).is_none() {
        return Err((StatusCode::NOT_FOUND, format!("unknown allocation {id}")));
    }
    Ok(AllocDir::new(base, id))
}

fn resolve(dir: &AllocDir, path: Option<&String>) -> Result<PathBuf, Failure> {
    dir.resolve(path.map(String::as_str).unwrap_or("/"))
        .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))
}

fn file_info(path: &Path, name: &str) -> Option<Value> {
    use std::os::unix::fs::PermissionsExt;
    let m = std::fs::symlink_metadata(path).ok()?;
    let mtime = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    let mode = m.permissions().mode();
    let kind = if m.is_dir() {
        'd'
    } else if m.file_type().is_symlink() {
        'L'
    } else {
        '-'
    };
    let mut perm = String::new();
    for (i, c) in ['r', 'w', 'x', 'r', 'w', 'x', 'r', 'w', 'x']
        .iter()
        .enumerate()
    {
        perm.push(if mode & (1 << (8 - i)) != 0 { *c } else { '-' });
    }
    Some(json!({
        "Name": name,
        "IsDir": m.is_dir(),
        "Size": m.len(),
        "FileMode": format!("{kind}{perm}"),
        "ModTime": proto::model::time::format_rfc3339(mtime),
        "ContentType": if m.is_dir() { "" } else { "application/octet-stream" },
    }))
}

async fn ls(
    State(core): State<Arc<NodeCore>>,
    UrlPath(alloc): UrlPath<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let dir = match alloc_dir(&core, &alloc) {
        Ok(d) => d,
        Err(r) => return r.into_response(),
    };
    let path = match resolve(&dir, q.get("path")) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let Ok(rd) = std::fs::read_dir(&path) else {
        return err(StatusCode::NOT_FOUND, "no such directory");
    };
    let mut out: Vec<Value> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| file_info(&e.path(), &e.file_name().to_string_lossy()))
        .collect();
    out.sort_by(|a, b| a["Name"].as_str().cmp(&b["Name"].as_str()));
    Json(out).into_response()
}

async fn stat(
    State(core): State<Arc<NodeCore>>,
    UrlPath(alloc): UrlPath<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let dir = match alloc_dir(&core, &alloc) {
        Ok(d) => d,
        Err(r) => return r.into_response(),
    };
    let path = match resolve(&dir, q.get("path")) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/".into());
    match file_info(&path, &name) {
        Some(v) => Json(v).into_response(),
        None => err(StatusCode::NOT_FOUND, "no such file"),
    }
}

async fn cat(
    State(core): State<Arc<NodeCore>>,
    UrlPath(alloc): UrlPath<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let dir = match alloc_dir(&core, &alloc) {
        Ok(d) => d,
        Err(r) => return r.into_response(),
    };
    let path = match resolve(&dir, q.get("path")) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    if path.is_dir() {
        return err(StatusCode::BAD_REQUEST, "path is a directory");
    }
    match tokio::fs::read(&path).await {
        Ok(b) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], b).into_response(),
        Err(_) => err(StatusCode::NOT_FOUND, "no such file"),
    }
}

/// Where a log read starts: file index and offset in it.
fn log_start(files: &[(u64, u64)], offset: u64, from_end: bool) -> (usize, u64) {
    let total: u64 = files.iter().map(|f| f.1).sum();
    let mut skip = if from_end {
        total.saturating_sub(offset)
    } else {
        offset.min(total)
    };
    for (i, (_, size)) in files.iter().enumerate() {
        if skip < *size || i + 1 == files.len() {
            return (i, skip.min(*size));
        }
        skip -= size;
    }
    (0, 0)
}

struct Follow {
    dir: PathBuf,
    base: String,
    index: u64,
    pos: u64,
    core: Arc<NodeCore>,
    alloc: String,
    follow: bool,
    idle_after_done: u32,
}

fn read_chunk(path: &Path, pos: u64) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(pos))?;
    let mut buf = Vec::with_capacity(64 * 1024);
    f.take(256 * 1024).read_to_end(&mut buf)?;
    Ok(buf)
}

async fn next_chunk(mut s: Follow) -> Option<(Result<bytes::Bytes, std::io::Error>, Follow)> {
    loop {
        let path = s.dir.join(format!("{}.{}", s.base, s.index));
        let chunk = read_chunk(&path, s.pos).unwrap_or_default();
        if !chunk.is_empty() {
            s.pos += chunk.len() as u64;
            s.idle_after_done = 0;
            return Some((Ok(bytes::Bytes::from(chunk)), s));
        }
        // Move on to the next file when there is one.
        let indexes = log_indexes(&s.dir, &s.base);
        if let Some(next) = indexes.iter().find(|i| **i > s.index) {
            s.index = *next;
            s.pos = 0;
            continue;
        }
        if !s.follow {
            return None;
        }
        let done = s
            .core
            .allocation(&s.alloc)
            .map(|v| v.finished)
            .unwrap_or(true);
        if done {
            s.idle_after_done += 1;
            if s.idle_after_done > 2 {
                return None;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn logs(
    State(core): State<Arc<NodeCore>>,
    UrlPath(alloc): UrlPath<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let dir = match alloc_dir(&core, &alloc) {
        Ok(d) => d,
        Err(r) => return r.into_response(),
    };
    let Some(task) = q.get("task").filter(|t| !t.is_empty()) else {
        return err(StatusCode::BAD_REQUEST, "missing task name");
    };
    if task.contains('/') || task.contains("..") {
        return err(StatusCode::BAD_REQUEST, "bad task name");
    }
    let kind = q.get("type").map(String::as_str).unwrap_or("stdout");
    if kind != "stdout" && kind != "stderr" {
        return err(StatusCode::BAD_REQUEST, "type must be stdout or stderr");
    }
    let offset: u64 = match q.get("offset").map(|s| s.parse()) {
        None => 0,
        Some(Ok(o)) => o,
        Some(Err(_)) => return err(StatusCode::BAD_REQUEST, "bad offset"),
    };
    let from_end = match q.get("origin").map(String::as_str) {
        None | Some("start") => false,
        Some("end") => true,
        Some(_) => return err(StatusCode::BAD_REQUEST, "origin must be start or end"),
    };
    let logs_dir = dir.logs();
    let base = format!("{task}.{kind}");
    let files: Vec<(u64, u64)> = log_indexes(&logs_dir, &base)
        .into_iter()
        .map(|i| {
            let size = std::fs::metadata(logs_dir.join(format!("{base}.{i}")))
                .map(|m| m.len())
                .unwrap_or(0);
            (i, size)
        })
        .collect();
    let follow = truthy(q.get("follow"));
    if files.is_empty() && !follow {
        return err(
            StatusCode::NOT_FOUND,
            format!("no {kind} logs for task {task}"),
        );
    }
    let (start, pos) = if files.is_empty() {
        (0, 0)
    } else {
        let (i, p) = log_start(&files, offset, from_end);
        (files[i].0, p)
    };
    let state = Follow {
        dir: logs_dir,
        base,
        index: start,
        pos,
        core,
        alloc,
        follow,
        idle_after_done: 0,
    };
    let stream = futures::stream::unfold(state, next_chunk);
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(stream),
    )
        .into_response()
}

fn usage_json(rss: u64, cpu_seconds: f64, percent: f64) -> Value {
    json!({
        "MemoryStats": {
            "RSS": rss, "Cache": 0, "Swap": 0, "Usage": rss, "MaxUsage": 0,
            "KernelUsage": 0, "KernelMaxUsage": 0, "Measured": ["RSS"],
        },
        "CpuStats": {
            "SystemMode": 0.0, "UserMode": 0.0, "TotalTicks": cpu_seconds,
            "ThrottledPeriods": 0, "ThrottledTime": 0, "Percent": percent,
            "Measured": ["Percent", "Total Ticks"],
        },
        "DeviceStats": [],
    })
}

async fn alloc_stats(State(core): State<Arc<NodeCore>>, UrlPath(id): UrlPath<String>) -> Response {
    let Some(view) = core.allocation(&id) else {
        return err(StatusCode::NOT_FOUND, format!("unknown allocation {id}"));
    };
    let sample = |core: &NodeCore| -> BTreeMap<String, crate::driver::TaskUsage> {
        view.handles
            .iter()
            .filter_map(|(name, h)| {
                let d = core.drivers.get(&h.driver)?;
                Some((name.clone(), d.stats(h)?))
            })
            .collect()
    };
    let first = sample(&core);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = sample(&core);
    let now = now_ns();
    let mut tasks = serde_json::Map::new();
    let (mut rss, mut cpu, mut pct) = (0u64, 0f64, 0f64);
    for (name, u) in &second {
        let before = first
            .get(name)
            .map(|b| b.cpu_seconds)
            .unwrap_or(u.cpu_seconds);
        let p = ((u.cpu_seconds - before) / 0.1 * 100.0).max(0.0);
        rss += u.rss_bytes;
        cpu += u.cpu_seconds;
        pct += p;
        let pids: serde_json::Map<String, Value> = u
            .pids
            .iter()
            .map(|p| (p.to_string(), usage_json(0, 0.0, 0.0)))
            .collect();
        tasks.insert(
            name.clone(),
            json!({
                "ResourceUsage": usage_json(u.rss_bytes, u.cpu_seconds, p),
                "Timestamp": now,
                "Pids": pids,
            }),
        );
    }
    Json(json!({
        "ResourceUsage": usage_json(rss, cpu, pct),
        "Tasks": tasks,
        "Timestamp": now,
    }))
    .into_response()
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct SignalBody {
    signal: String,
    task: String,
}

async fn signal(
    State(core): State<Arc<NodeCore>>,
    UrlPath(id): UrlPath<String>,
    body: Option<Json<SignalBody>>,
) -> Response {
    let body = body.map(|b| b.0).unwrap_or_default();
    let name = if body.signal.is_empty() {
        "SIGKILL"
    } else {
        &body.signal
    };
    let Some(sig) = procfs::signal_number(name) else {
        return err(StatusCode::BAD_REQUEST, format!("unknown signal {name:?}"));
    };
    if core.allocation(&id).is_none() {
        return err(StatusCode::NOT_FOUND, format!("unknown allocation {id}"));
    }
    let task = (!body.task.is_empty()).then_some(body.task);
    match core.signal_alloc(&id, task, sig).await {
        Ok(()) => Json(json!({})).into_response(),
        Err(e) => err(StatusCode::BAD_REQUEST, e),
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RestartBody {
    task_name: String,
    all_tasks: bool,
}

async fn restart(
    State(core): State<Arc<NodeCore>>,
    UrlPath(id): UrlPath<String>,
    body: Option<Json<RestartBody>>,
) -> Response {
    let body = body.map(|b| b.0).unwrap_or_default();
    if core.allocation(&id).is_none() {
        return err(StatusCode::NOT_FOUND, format!("unknown allocation {id}"));
    }
    let task = (!body.all_tasks && !body.task_name.is_empty()).then_some(body.task_name);
    match core.restart_alloc(&id, task).await {
        Ok(()) => Json(json!({})).into_response(),
        Err(e) => err(StatusCode::BAD_REQUEST, e),
    }
}

fn cpu_times() -> Vec<(String, [u64; 4])> {
    // name -> (user+nice, system, idle+iowait, total)
    std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let name = it.next()?.to_string();
            let v: Vec<u64> = it.filter_map(|x| x.parse().ok()).collect();
            if v.len() < 5 {
                return None;
            }
            let total: u64 = v.iter().take(8).sum();
            Some((name, [v[0] + v[1], v[2], v[3] + v[4], total]))
        })
        .collect()
}

async fn host_stats(State(core): State<Arc<NodeCore>>) -> Response {
    let before = cpu_times();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after = cpu_times();
    let cpus: Vec<Value> = after
        .iter()
        .map(|(name, a)| {
            let b = before
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, b)| *b)
                .unwrap_or([0; 4]);
            let dt = (a[3].saturating_sub(b[3])).max(1) as f64;
            let pct = |i: usize| a[i].saturating_sub(b[i]) as f64 / dt * 100.0;
            json!({
                "CPU": name, "User": pct(0), "System": pct(1), "Idle": pct(2),
                "Total": 100.0 - pct(2),
            })
        })
        .collect();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |f| crate::fingerprint::meminfo_field(&meminfo, f).unwrap_or(0);
    let (total, avail, free) = (field("MemTotal"), field("MemAvailable"), field("MemFree"));
    let uptime = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0) as u64;
    let disk = core.alloc_base.as_ref().and_then(|b| {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(b.as_os_str().as_bytes()).ok()?;
        // SAFETY: statvfs is plain data; valid C string.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return None;
        }
        let size = st.f_blocks as u64 * st.f_frsize as u64;
        let available = st.f_bavail as u64 * st.f_frsize as u64;
        let used = size.saturating_sub(st.f_bfree as u64 * st.f_frsize as u64);
        Some(json!({
            "Device": "", "Mountpoint": b.display().to_string(), "Size": size, "Used": used,
            "Available": available,
            "UsedPercent": if size > 0 { used as f64 / size as f64 * 100.0 } else { 0.0 },
            "InodesUsedPercent": if st.f_files > 0 { (st.f_files - st.f_ffree) as f64 / st.f_files as f64 * 100.0 } else { 0.0 },
        }))
    });
    let mhz: f64 = core
        .node_snapshot()
        .attributes
        .get("cpu.frequency")
        .and_then(|s| s.parse().ok())
        .unwrap_or(crate::fingerprint::FALLBACK_CPU_MHZ as f64);
    let ticks_consumed: f64 = cpus
        .iter()
        .map(|c| c["Total"].as_f64().unwrap_or(0.0))
        .sum::<f64>()
        / 100.0
        * mhz;
    Json(json!({
        "Memory": { "Total": total, "Available": avail, "Used": total.saturating_sub(avail), "Free": free },
        "CPU": cpus,
        "DiskStats": disk.clone().map(|d| vec![d]).unwrap_or_default(),
        "AllocDirStats": disk,
        "DeviceStats": [],
        "Uptime": uptime,
        "Timestamp": now_ns(),
        "CPUTicksConsumed": ticks_consumed,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::log_start;

    #[test]
    fn log_offsets() {
        let files = [(0, 10), (1, 10), (2, 5)];
        assert_eq!(log_start(&files, 0, false), (0, 0));
        assert_eq!(log_start(&files, 12, false), (1, 2));
        assert_eq!(log_start(&files, 100, false), (2, 5));
        assert_eq!(log_start(&files, 3, true), (2, 2));
        assert_eq!(log_start(&files, 7, true), (1, 8));
        assert_eq!(log_start(&files, 100, true), (0, 0));
    }
}
