//! Snapshots as sqlite files.
//!
//! One format serves both Raft snapshots (sent to followers that fell behind
//! the purged log) and operator snapshots (`/v1/operator/snapshot`): a `meta`
//! table (format, Raft index, openraft's snapshot meta) and an
//! `objects` table with one JSON row per stored object. Secondary indexes are
//! rebuilt on load.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::Row as _;

use super::{table, Tables};

/// Format version written into every snapshot.
pub const FORMAT: &str = "atoll-snapshot-v1";

/// One stored object: its kind, its key, and its JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// `job`, `job_version`, `job_summary`, `eval`, `alloc`, `node`,
    /// `deployment`, `table_index`.
    pub kind: String,
    /// The object's key within its kind.
    pub key: String,
    /// The object as JSON.
    pub value: String,
}

/// Errors reading or writing snapshot files.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// sqlite failed.
    #[error("snapshot file {path}: {source}")]
    Sqlite {
        /// The file.
        path: String,
        /// What sqlite said.
        #[source]
        source: sqlx::Error,
    },
    /// The file is not an Atoll snapshot or is damaged.
    #[error("snapshot file {path} is not a valid Atoll snapshot: {what}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        what: String,
    },
    /// A row could not be decoded.
    #[error("snapshot row {kind}/{key}: {source}")]
    Row {
        /// Kind of the row.
        kind: String,
        /// Key of the row.
        key: String,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// I/O on the file failed.
    #[error("snapshot file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// What a snapshot file holds besides the tables.
#[derive(Debug, Clone, Default)]
pub struct SnapshotMeta {
    /// Raft index of the state.
    pub index: u64,
    /// JSON of openraft's snapshot meta: last log id, membership, snapshot
    /// id (Raft snapshots only).
    pub raft: Option<String>,
}

fn json<T: Serialize>(v: &T) -> String {
    // Serializing our own model types to JSON cannot fail: they have string
    // keys and no non-finite floats.
    serde_json::to_string(v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// Every row of `tables`.
pub fn tables_to_rows(t: &Tables) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut push = |kind: &str, key: String, value: String| {
        rows.push(Row {
            kind: kind.to_string(),
            key,
            value,
        })
    };
    for ((ns, id), j) in &t.jobs {
        push("job", format!("{ns}/{id}"), json(&**j));
    }
    for ((ns, id, v), j) in &t.job_versions {
        push("job_version", format!("{ns}/{id}/{v}"), json(&**j));
    }
    for ((ns, id), s) in &t.job_summaries {
        push("job_summary", format!("{ns}/{id}"), json(&**s));
    }
    for (id, e) in &t.evals {
        push("eval", id.clone(), json(&**e));
    }
    // Without their job: each allocation gets the version it runs back from
    // the job_version rows when the snapshot is read (one shared copy per
    // version instead of one per allocation, in the file and in memory).
    for (id, a) in &t.allocs {
        let mut bare = (**a).clone();
        bare.job = None;
        push("alloc", id.clone(), json(&bare));
    }
    for (id, n) in &t.nodes {
        push("node", id.clone(), json(&**n));
    }
    for (id, d) in &t.deployments {
        push("deployment", id.clone(), json(&**d));
    }
    for ((ns, id), l) in &t.periodic_launches {
        push("periodic_launch", format!("{ns}/{id}"), json(&**l));
    }
    if let Some(c) = &t.scheduler_config {
        push("scheduler_config", String::new(), json(&**c));
    }
    if let Some(c) = &t.autopilot_config {
        push("autopilot_config", String::new(), json(&**c));
    }
    for (name, idx) in &t.table_index {
        push("table_index", name.clone(), idx.to_string());
    }
    push("index_offset", String::new(), t.index_offset.to_string());
    for r in t.requests.iter() {
        push("request", r.request.id.clone(), json(r));
    }
    rows
}

fn decode<T: serde::de::DeserializeOwned>(row: &Row) -> Result<T, SnapshotError> {
    serde_json::from_str(&row.value).map_err(|source| SnapshotError::Row {
        kind: row.kind.clone(),
        key: row.key.clone(),
        source,
    })
}

/// Rebuild tables (and their secondary indexes) from rows.
pub fn tables_from_rows(rows: Vec<Row>) -> Result<Tables, SnapshotError> {
    let mut t = Tables::default();
    for row in rows {
        match row.kind.as_str() {
            "job" => {
                let j: proto::model::Job = decode(&row)?;
                t.jobs
                    .insert((j.namespace.clone(), j.id.clone()), Arc::new(j));
            }
            "job_version" => {
                let j: proto::model::Job = decode(&row)?;
                t.job_versions
                    .insert((j.namespace.clone(), j.id.clone(), j.version), Arc::new(j));
            }
            "job_summary" => {
                let s: proto::model::JobSummary = decode(&row)?;
                t.job_summaries
                    .insert((s.namespace.clone(), s.job_id.clone()), Arc::new(s));
            }
            "eval" => {
                let e: proto::model::Evaluation = decode(&row)?;
                t.evals_by_job
                    .insert((e.namespace.clone(), e.job_id.clone(), e.id.clone()), ());
                t.evals_by_modify.insert((e.modify_index, e.id.clone()), ());
                t.evals.insert(e.id.clone(), Arc::new(e));
            }
            "alloc" => {
                let a: proto::model::Allocation = decode(&row)?;
                t.allocs_by_job
                    .insert((a.namespace.clone(), a.job_id.clone(), a.id.clone()), ());
                t.allocs_by_node
                    .insert((a.node_id.clone(), a.id.clone()), ());
                t.allocs.insert(a.id.clone(), Arc::new(a));
            }
            "node" => {
                let n: proto::model::Node = decode(&row)?;
                t.nodes.insert(n.id.clone(), Arc::new(n));
            }
            "deployment" => {
                let d: proto::model::Deployment = decode(&row)?;
                t.deployments.insert(d.id.clone(), Arc::new(d));
            }
            "periodic_launch" => {
                let l: proto::model::PeriodicLaunch = decode(&row)?;
                t.periodic_launches
                    .insert((l.namespace.clone(), l.id.clone()), Arc::new(l));
            }
            "scheduler_config" => t.scheduler_config = Some(Arc::new(decode(&row)?)),
            "autopilot_config" => t.autopilot_config = Some(Arc::new(decode(&row)?)),
            "index_offset" => t.index_offset = decode(&row)?,
            "request" => t.requests.remember(decode(&row)?),
            "table_index" => {
                let idx: u64 = decode(&row)?;
                if table::ALL.contains(&row.key.as_str()) {
                    t.table_index.insert(row.key.clone(), idx);
                }
            }
            other => {
                return Err(SnapshotError::Invalid {
                    path: String::new(),
                    what: format!("unknown row kind {other:?}"),
                })
            }
        }
    }
    let allocs: Vec<(String, Arc<proto::model::Allocation>)> = t
        .allocs
        .iter()
        .map(|(id, a)| (id.clone(), a.clone()))
        .collect();
    for (id, a) in allocs {
        let job = t
            .job_versions
            .get(&(a.namespace.clone(), a.job_id.clone(), a.job_version))
            .or_else(|| t.jobs.get(&(a.namespace.clone(), a.job_id.clone())))
            .cloned();
        if job.is_some() {
            let mut a = (*a).clone();
            a.job = job;
            t.allocs.insert(id, Arc::new(a));
        }
    }
    t.index = t
        .table_index
        .values()
        .copied()
        .max()
        .unwrap_or(0)
        .saturating_sub(t.index_offset);
    Ok(t)
}

async fn open(path: &Path, create: bool) -> Result<sqlx::SqlitePool, SnapshotError> {
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(create)
        .journal_mode(SqliteJournalMode::Delete)
        .synchronous(SqliteSynchronous::Full);
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .map_err(|source| SnapshotError::Sqlite {
            path: path.display().to_string(),
            source,
        })
}

/// Write `tables` with `meta` into a new sqlite file at `path` (replacing it
/// atomically: written beside it, fsynced, then renamed).
pub async fn write(path: &Path, tables: &Tables, meta: &SnapshotMeta) -> Result<(), SnapshotError> {
    let tmp = path.with_extension("tmp");
    let p = path.display().to_string();
    let _ = tokio::fs::remove_file(&tmp).await;
    let sql = |source| SnapshotError::Sqlite {
        path: p.clone(),
        source,
    };
    let pool = open(&tmp, true).await?;
    sqlx::query("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        .execute(&pool)
        .await
        .map_err(sql)?;
    sqlx::query("CREATE TABLE objects (kind TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (kind, key))")
        .execute(&pool)
        .await
        .map_err(sql)?;
    let mut tx = pool.begin().await.map_err(sql)?;
    let mut metas = vec![
        ("format", FORMAT.to_string()),
        ("index", tables.index.to_string()),
    ];
    if let Some(r) = &meta.raft {
        metas.push(("raft", r.clone()));
    }
    for (k, v) in metas {
        sqlx::query("INSERT INTO meta (key, value) VALUES (?, ?)")
            .bind(k)
            .bind(v)
            .execute(&mut *tx)
            .await
            .map_err(sql)?;
    }
    // Encoding every object is CPU work: keep it off the async workers
    // (Raft heartbeats run there).
    let owned = tables.clone();
    let rows = tokio::task::spawn_blocking(move || tables_to_rows(&owned))
        .await
        .map_err(|e| SnapshotError::Invalid {
            path: p.clone(),
            what: format!("encoding rows: {e}"),
        })?;
    // Many rows per statement: one round trip to sqlite per chunk.
    const PER_STATEMENT: usize = 300;
    for chunk in rows.chunks(PER_STATEMENT) {
        let mut sql_text = String::from("INSERT INTO objects (kind, key, value) VALUES ");
        for i in 0..chunk.len() {
            if i > 0 {
                sql_text.push(',');
            }
            sql_text.push_str("(?, ?, ?)");
        }
        // Only placeholders vary: the values are bound, never spliced in.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql_text));
        for row in chunk {
            q = q
                .bind(row.kind.as_str())
                .bind(row.key.as_str())
                .bind(row.value.as_str());
        }
        q.execute(&mut *tx).await.map_err(sql)?;
    }
    tx.commit().await.map_err(sql)?;
    pool.close().await;
    tokio::fs::rename(&tmp, path)
        .await
        .map_err(|source| SnapshotError::Io { path: p, source })?;
    Ok(())
}

/// Read a snapshot file: its meta and its rows.
pub async fn read(path: &Path) -> Result<(SnapshotMeta, Vec<Row>), SnapshotError> {
    let p = path.display().to_string();
    if !tokio::fs::try_exists(path).await.unwrap_or(false) {
        return Err(SnapshotError::Invalid {
            path: p,
            what: "file does not exist".into(),
        });
    }
    let pool = open(path, false).await?;
    let result = read_pool(&pool, &p).await;
    pool.close().await;
    result
}

async fn read_pool(
    pool: &sqlx::SqlitePool,
    p: &str,
) -> Result<(SnapshotMeta, Vec<Row>), SnapshotError> {
    let invalid = |what: String| SnapshotError::Invalid {
        path: p.to_string(),
        what,
    };
    let meta_rows = sqlx::query("SELECT key, value FROM meta")
        .fetch_all(pool)
        .await
        .map_err(|e| invalid(format!("no meta table ({e})")))?;
    let mut meta = SnapshotMeta::default();
    let mut format = None;
    for r in meta_rows {
        let k: String = r.try_get(0).map_err(|e| invalid(e.to_string()))?;
        let v: String = r.try_get(1).map_err(|e| invalid(e.to_string()))?;
        match k.as_str() {
            "format" => format = Some(v),
            "index" => meta.index = v.parse().map_err(|_| invalid(format!("bad index {v:?}")))?,
            "raft" => meta.raft = Some(v),
            _ => {}
        }
    }
    if format.as_deref() != Some(FORMAT) {
        return Err(invalid(format!(
            "format is {format:?}, expected {FORMAT:?}"
        )));
    }
    let mut rows = Vec::new();
    for r in sqlx::query("SELECT kind, key, value FROM objects")
        .fetch_all(pool)
        .await
        .map_err(|e| invalid(format!("no objects table ({e})")))?
    {
        rows.push(Row {
            kind: r.try_get(0).map_err(|e| invalid(e.to_string()))?,
            key: r.try_get(1).map_err(|e| invalid(e.to_string()))?,
            value: r.try_get(2).map_err(|e| invalid(e.to_string()))?,
        });
    }
    Ok((meta, rows))
}
