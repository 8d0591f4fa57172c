//! Local state: `<data-dir>/client.db` (sqlite, WAL, `synchronous=FULL`)
//! holding the node's allocations and, per task, its state and driver handle
//! (pid + process start time), so a restarted agent re-attaches to its tasks.
//! The node's identity lives beside it in `node-id` and `secret-id`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use proto::model::{Allocation, TaskState};
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::driver::TaskHandle;

/// What the agent keeps about one task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalTaskState {
    /// The state reported to the servers.
    pub state: TaskState,
    /// The running task, if any.
    pub handle: Option<TaskHandle>,
}

/// One stored allocation with its tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAlloc {
    /// The allocation (with its job), as last received.
    pub alloc: Allocation,
    /// Its tasks by name.
    pub tasks: BTreeMap<String, LocalTaskState>,
}

/// Errors of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// sqlite failed.
    #[error("client state: {0}")]
    Sql(#[from] sqlx::Error),
    /// A row did not decode.
    #[error("client state: bad row: {0}")]
    Decode(#[from] serde_json::Error),
    /// The database is damaged.
    #[error("client state {0} is damaged: {1}")]
    Damaged(String, String),
}

/// The sqlite store.
#[derive(Clone)]
pub struct StateStore {
    pool: SqlitePool,
}

impl StateStore {
    /// Opens (or creates) the store at `path`.
    pub async fn open(path: &Path) -> Result<Self, StateError> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await?;
        for stmt in [
            "CREATE TABLE IF NOT EXISTS allocs (id TEXT PRIMARY KEY, alloc TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS tasks (alloc_id TEXT NOT NULL, task TEXT NOT NULL, \
             state TEXT NOT NULL, PRIMARY KEY (alloc_id, task))",
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        ] {
            sqlx::query(stmt).execute(&pool).await?;
        }
        let check: String = sqlx::query("PRAGMA quick_check")
            .fetch_one(&pool)
            .await?
            .try_get(0)?;
        if check != "ok" {
            return Err(StateError::Damaged(path.display().to_string(), check));
        }
        Ok(Self { pool })
    }

    /// Stores (replaces) an allocation.
    pub async fn put_alloc(&self, alloc: &Allocation) -> Result<(), StateError> {
        let json = serde_json::to_string(alloc)?;
        sqlx::query("INSERT OR REPLACE INTO allocs (id, alloc) VALUES (?, ?)")
            .bind(&alloc.id)
            .bind(json)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Stores (replaces) a task's state.
    pub async fn put_task(
        &self,
        alloc_id: &str,
        task: &str,
        state: &LocalTaskState,
    ) -> Result<(), StateError> {
        let json = serde_json::to_string(state)?;
        sqlx::query("INSERT OR REPLACE INTO tasks (alloc_id, task, state) VALUES (?, ?, ?)")
            .bind(alloc_id)
            .bind(task)
            .bind(json)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Forgets an allocation and its tasks.
    pub async fn delete_alloc(&self, alloc_id: &str) -> Result<(), StateError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM tasks WHERE alloc_id = ?")
            .bind(alloc_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM allocs WHERE id = ?")
            .bind(alloc_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every stored allocation with its tasks.
    pub async fn load(&self) -> Result<Vec<StoredAlloc>, StateError> {
        let mut out: BTreeMap<String, StoredAlloc> = BTreeMap::new();
        for row in sqlx::query("SELECT id, alloc FROM allocs")
            .fetch_all(&self.pool)
            .await?
        {
            let id: String = row.try_get(0)?;
            let json: String = row.try_get(1)?;
            out.insert(
                id,
                StoredAlloc {
                    alloc: serde_json::from_str(&json)?,
                    tasks: BTreeMap::new(),
                },
            );
        }
        for row in sqlx::query("SELECT alloc_id, task, state FROM tasks")
            .fetch_all(&self.pool)
            .await?
        {
            let alloc_id: String = row.try_get(0)?;
            let task: String = row.try_get(1)?;
            let json: String = row.try_get(2)?;
            if let Some(a) = out.get_mut(&alloc_id) {
                a.tasks.insert(task, serde_json::from_str(&json)?);
            }
        }
        Ok(out.into_values().collect())
    }

    /// A metadata value.
    pub async fn get_meta(&self, key: &str) -> Result<Option<String>, StateError> {
        let row = sqlx::query("SELECT value FROM meta WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get(0)?),
            None => None,
        })
    }

    /// Sets a metadata value.
    pub async fn put_meta(&self, key: &str, value: &str) -> Result<(), StateError> {
        sqlx::query("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The node's id and secret id: read from `node-id` and `secret-id` in
/// `data_dir`, or new random UUIDs written there (the secret with mode 0600).
pub fn load_or_create_identity(data_dir: &Path) -> std::io::Result<(String, String)> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(data_dir)?;
    let get = |name: &str, private: bool| -> std::io::Result<String> {
        let path = data_dir.join(name);
        if let Ok(s) = std::fs::read_to_string(&path) {
            let s = s.trim().to_string();
            if uuid::Uuid::parse_str(&s).is_ok() {
                return Ok(s);
            }
        }
        let id = uuid::Uuid::new_v4().to_string();
        let tmp = data_dir.join(format!(".{name}.tmp"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(if private { 0o600 } else { 0o644 })
            .open(&tmp)?;
        f.write_all(id.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        Ok(id)
    };
    Ok((get("node-id", false)?, get("secret-id", true)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::model::{Job, TASK_STATE_RUNNING};

    #[tokio::test]
    async fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.db");
        let alloc = Allocation {
            id: "a1".into(),
            name: "j.g[0]".into(),
            job: Some(std::sync::Arc::new(Job {
                id: "j".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let task = LocalTaskState {
            state: TaskState {
                state: TASK_STATE_RUNNING.into(),
                restarts: 2,
                ..Default::default()
            },
            handle: Some(TaskHandle {
                driver: "raw_exec".into(),
                task_id: "a1/web".into(),
                pid: 4242,
                pgid: 4242,
                start_ticks: 987_654,
                ..Default::default()
            }),
        };
        {
            let s = StateStore::open(&path).await.unwrap();
            s.put_alloc(&alloc).await.unwrap();
            s.put_task("a1", "web", &task).await.unwrap();
            s.put_alloc(&Allocation {
                id: "a2".into(),
                ..Default::default()
            })
            .await
            .unwrap();
            s.put_task("a2", "x", &LocalTaskState::default())
                .await
                .unwrap();
            s.delete_alloc("a2").await.unwrap();
            s.put_meta("k", "v").await.unwrap();
            s.close().await;
        }
        let s = StateStore::open(&path).await.unwrap();
        let all = s.load().await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].alloc, alloc);
        assert_eq!(all[0].tasks["web"], task);
        assert_eq!(s.get_meta("k").await.unwrap().as_deref(), Some("v"));
        assert_eq!(s.get_meta("nope").await.unwrap(), None);
    }

    #[test]
    fn identity_is_stable() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = load_or_create_identity(dir.path()).unwrap();
        assert_ne!(a, b);
        assert_eq!(load_or_create_identity(dir.path()).unwrap(), (a, b));
    }
}
