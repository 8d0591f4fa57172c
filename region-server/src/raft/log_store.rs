//! The Raft log and vote in sqlite.
//!
//! One writer task owns the write connection and applies operations in the
//! order openraft issued them. Appends that queue up while a commit is under
//! way are committed together in one transaction (group commit), and each
//! append's flushed callback fires only after its transaction is on disk
//! (WAL with `synchronous=FULL`). Entries are also kept in memory from the
//! last purge on, so replication never reads sqlite.
//!
//! The committed log id is only a hint for a restart (how far to re-apply
//! the log before hearing from a leader; Raft's safety does not rest on
//! it), and openraft awaits `save_committed` inside its core loop. So it is
//! not written by a transaction of its own: it rides along with the next
//! write (usually the next append), or is written alone once the log has
//! been idle for [`COMMITTED_IDLE_FLUSH`]. A crash loses at most the latest
//! hint, and a saved value never names an entry that is not on disk.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, Entry, LogState, RaftLogReader, StorageIOError, Vote};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use super::{LogId, NodeId, StorageError, TypeConfig};

/// Errors opening the log store.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// sqlite could not open or read the database.
    #[error("raft log database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: String,
        /// What sqlite said.
        #[source]
        source: sqlx::Error,
    },
    /// A stored row could not be decoded: the file is damaged or foreign.
    #[error("raft log database {path} is corrupt: {what}")]
    Corrupt {
        /// The database file.
        path: String,
        /// What could not be decoded.
        what: String,
    },
}

/// How long the log must be idle before a committed log id that no other
/// write carried is written by a transaction of its own.
pub const COMMITTED_IDLE_FLUSH: Duration = Duration::from_millis(200);

/// Encoded entries `(index, JSON)` of one append, with its flush callback.
type AppendBatch = (Vec<(u64, Vec<u8>)>, LogFlushed<TypeConfig>);

enum WriteOp {
    Append(Vec<(u64, Vec<u8>)>, LogFlushed<TypeConfig>),
    /// The committed log id (JSON), saved with the next write.
    Committed(Vec<u8>),
    Truncate(u64, oneshot::Sender<Result<(), sqlx::Error>>),
    Purge(LogId, oneshot::Sender<Result<(), sqlx::Error>>),
    Meta(
        &'static str,
        Vec<u8>,
        oneshot::Sender<Result<(), sqlx::Error>>,
    ),
}

struct Cache {
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    last_purged: Option<LogId>,
}

struct Shared {
    cache: Mutex<Cache>,
    /// The last index openraft saved as committed (for metrics).
    committed: Arc<AtomicU64>,
    /// The last committed log id openraft saved, which may not have
    /// reached sqlite yet.
    committed_id: Mutex<Option<LogId>>,
    /// Entries and encoded bytes appended to this log (for metrics).
    appended: Arc<Appended>,
}

/// Entries and encoded bytes appended to a log store since it opened
/// (the leader's own entries and those replicated to a follower alike).
#[derive(Debug, Default)]
pub struct Appended {
    /// Entries appended.
    pub entries: AtomicU64,
    /// Bytes of their encoding, as written to sqlite.
    pub bytes: AtomicU64,
}

impl Shared {
    fn cache(&self) -> MutexGuard<'_, Cache> {
        // A panic while holding the lock leaves the cache consistent (every
        // mutation is a single map operation), so a poisoned lock is usable.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn committed_id(&self) -> MutexGuard<'_, Option<LogId>> {
        // Holds a plain value: usable after a panic elsewhere.
        self.committed_id.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The sqlite-backed Raft log store.
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
    writer: mpsc::UnboundedSender<WriteOp>,
    pool: SqlitePool,
}

/// A cheap reader of the in-memory log, for replication.
#[derive(Clone)]
pub struct LogReader {
    shared: Arc<Shared>,
}

/// sqlite options for Atoll's durable files.
pub(crate) fn sqlite_options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10))
}

impl LogStore {
    /// Open (or create) the log at `path` and load it into memory.
    pub async fn open(path: &Path) -> Result<Self, OpenError> {
        let p = path.display().to_string();
        let sql_err = |source| OpenError::Sqlite {
            path: p.clone(),
            source,
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(sqlite_options(path))
            .await
            .map_err(sql_err)?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS log (idx INTEGER PRIMARY KEY, entry BLOB NOT NULL)",
        )
        .execute(&pool)
        .await
        .map_err(sql_err)?;
        sqlx::query("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
            .execute(&pool)
            .await
            .map_err(sql_err)?;
        let integrity: String = sqlx::query("PRAGMA quick_check")
            .fetch_one(&pool)
            .await
            .map_err(sql_err)?
            .try_get(0)
            .map_err(sql_err)?;
        if integrity != "ok" {
            return Err(OpenError::Corrupt {
                path: p,
                what: format!("integrity check: {integrity}"),
            });
        }

        let mut entries = BTreeMap::new();
        for row in sqlx::query("SELECT idx, entry FROM log ORDER BY idx")
            .fetch_all(&pool)
            .await
            .map_err(sql_err)?
        {
            let idx: i64 = row.try_get(0).map_err(sql_err)?;
            let blob: Vec<u8> = row.try_get(1).map_err(sql_err)?;
            let entry: Entry<TypeConfig> =
                serde_json::from_slice(&blob).map_err(|e| OpenError::Corrupt {
                    path: p.clone(),
                    what: format!("log entry {idx}: {e}"),
                })?;
            entries.insert(idx as u64, entry);
        }
        let last_purged = read_meta::<LogId>(&pool, "last_purged")
            .await
            .map_err(|e| OpenError::Corrupt {
                path: p.clone(),
                what: format!("last_purged: {e}"),
            })?;

        let shared = Arc::new(Shared {
            cache: Mutex::new(Cache {
                entries,
                last_purged,
            }),
            committed: Arc::default(),
            committed_id: Mutex::new(None),
            appended: Arc::default(),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(writer_task(pool.clone(), rx));
        Ok(Self {
            shared,
            writer: tx,
            pool,
        })
    }

    /// The highest index openraft saved as committed (0 before any), kept
    /// current by `save_committed`/`read_committed`: the commit index gauge.
    pub fn committed_index(&self) -> Arc<AtomicU64> {
        self.shared.committed.clone()
    }

    /// Counts of what was appended since open: the appended entries and
    /// bytes counters.
    pub fn appended(&self) -> Arc<Appended> {
        self.shared.appended.clone()
    }

    async fn write_meta<T: serde::Serialize>(
        &self,
        key: &'static str,
        value: &T,
    ) -> Result<(), AnyError> {
        let bytes = serde_json::to_vec(value).map_err(|e| AnyError::new(&e))?;
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(WriteOp::Meta(key, bytes, tx))
            .map_err(|_| AnyError::error("raft log writer stopped"))?;
        rx.await
            .map_err(|_| AnyError::error("raft log writer stopped"))?
            .map_err(|e| AnyError::new(&e))
    }

    async fn run_op(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<(), sqlx::Error>>) -> WriteOp,
    ) -> Result<(), AnyError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(op(tx))
            .map_err(|_| AnyError::error("raft log writer stopped"))?;
        rx.await
            .map_err(|_| AnyError::error("raft log writer stopped"))?
            .map_err(|e| AnyError::new(&e))
    }
}

async fn read_meta<T: serde::de::DeserializeOwned>(
    pool: &SqlitePool,
    key: &str,
) -> Result<Option<T>, AnyError> {
    let row = sqlx::query("SELECT value FROM meta WHERE key = ?")
        .bind(key)
        .fetch_optional(pool)
        .await
        .map_err(|e| AnyError::new(&e))?;
    match row {
        None => Ok(None),
        Some(row) => {
            let blob: Vec<u8> = row.try_get(0).map_err(|e| AnyError::new(&e))?;
            serde_json::from_slice(&blob)
                .map(Some)
                .map_err(|e| AnyError::new(&e))
        }
    }
}

/// Applies write operations in order; consecutive appends share one commit,
/// and the latest committed log id rides along with whatever is written
/// next.
async fn writer_task(pool: SqlitePool, mut rx: mpsc::UnboundedReceiver<WriteOp>) {
    let mut pending: Option<WriteOp> = None;
    let mut committed: Option<Vec<u8>> = None;
    loop {
        let op = match pending.take() {
            Some(op) => op,
            None if committed.is_some() => {
                match tokio::time::timeout(COMMITTED_IDLE_FLUSH, rx.recv()).await {
                    Ok(Some(op)) => op,
                    idle_or_closed => {
                        let r = async {
                            let tx = pool.begin().await?;
                            commit_with(tx, committed.take()).await
                        };
                        if let Err(e) = r.await {
                            tracing::warn!(error = %e, "raft log: saving the committed log id");
                        }
                        if matches!(idle_or_closed, Ok(None)) {
                            return;
                        }
                        continue;
                    }
                }
            }
            None => match rx.recv().await {
                Some(op) => op,
                None => return,
            },
        };
        match op {
            WriteOp::Committed(c) => committed = Some(c),
            WriteOp::Append(first, cb) => {
                let mut batch = vec![(first, cb)];
                // Group commit: take every append already queued behind this one.
                while let Ok(next) = rx.try_recv() {
                    match next {
                        WriteOp::Append(e, cb) => batch.push((e, cb)),
                        WriteOp::Committed(c) => committed = Some(c),
                        other => {
                            pending = Some(other);
                            break;
                        }
                    }
                }
                let result = append_batch(&pool, &batch, committed.take()).await;
                for (_, cb) in batch {
                    let r = match &result {
                        Ok(()) => Ok(()),
                        Err(e) => Err(std::io::Error::other(e.to_string())),
                    };
                    cb.log_io_completed(r);
                }
            }
            WriteOp::Truncate(from, done) => {
                let r = async {
                    let mut tx = pool.begin().await?;
                    sqlx::query("DELETE FROM log WHERE idx >= ?")
                        .bind(from as i64)
                        .execute(&mut *tx)
                        .await?;
                    commit_with(tx, committed.take()).await
                };
                let _ = done.send(r.await);
            }
            WriteOp::Purge(upto, done) => {
                let r = async {
                    let mut tx = pool.begin().await?;
                    purge(&mut tx, upto).await?;
                    commit_with(tx, committed.take()).await
                };
                let _ = done.send(r.await);
            }
            WriteOp::Meta(key, value, done) => {
                let r = async {
                    let mut tx = pool.begin().await?;
                    put_meta(&mut tx, key, value).await?;
                    commit_with(tx, committed.take()).await
                };
                let _ = done.send(r.await);
            }
        }
    }
}

type SqliteTx = sqlx::Transaction<'static, sqlx::Sqlite>;

/// Save `committed` (when given) in `tx`, then commit it.
async fn commit_with(mut tx: SqliteTx, committed: Option<Vec<u8>>) -> Result<(), sqlx::Error> {
    if let Some(c) = committed {
        put_meta(&mut tx, "committed", c).await?;
    }
    tx.commit().await
}

async fn put_meta(tx: &mut SqliteTx, key: &str, value: Vec<u8>) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)")
        .bind(key)
        .bind(value)
        .execute(&mut **tx)
        .await
        .map(|_| ())
}

async fn append_batch(
    pool: &SqlitePool,
    batch: &[AppendBatch],
    committed: Option<Vec<u8>>,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for (entries, _) in batch {
        for (idx, blob) in entries {
            sqlx::query("INSERT OR REPLACE INTO log (idx, entry) VALUES (?, ?)")
                .bind(*idx as i64)
                .bind(blob.as_slice())
                .execute(&mut *tx)
                .await?;
        }
    }
    commit_with(tx, committed).await
}

async fn purge(tx: &mut SqliteTx, upto: LogId) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM log WHERE idx <= ?")
        .bind(upto.index as i64)
        .execute(&mut **tx)
        .await?;
    let v = serde_json::to_vec(&upto).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    put_meta(tx, "last_purged", v).await
}

fn read_range<RB: RangeBounds<u64>>(shared: &Shared, range: RB) -> Vec<Entry<TypeConfig>> {
    shared
        .cache()
        .entries
        .range(range)
        .map(|(_, e)| e.clone())
        .collect()
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        Ok(read_range(&self.shared, range))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        Ok(read_range(&self.shared, range))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let cache = self.shared.cache();
        let last = cache.entries.values().next_back().map(|e| e.log_id);
        let last_purged = cache.last_purged;
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last.or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader {
            shared: self.shared.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.write_meta("vote", vote)
            .await
            .map_err(|e| StorageIOError::write_vote(e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        read_meta(&self.pool, "vote")
            .await
            .map_err(|e| StorageIOError::read_vote(e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not awaited: the hint is written with the next write (see the
        // module's documentation), so openraft's core does not wait for a
        // transaction of its own on every commit.
        let bytes =
            serde_json::to_vec(&committed).map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
        self.writer
            .send(WriteOp::Committed(bytes))
            .map_err(|_| StorageIOError::write(AnyError::error("raft log writer stopped")))?;
        *self.shared.committed_id() = committed;
        if let Some(c) = committed {
            self.shared.committed.fetch_max(c.index, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let saved = *self.shared.committed_id();
        let v = match saved {
            Some(c) => Some(c),
            None => {
                let v: Option<Option<LogId>> = read_meta(&self.pool, "committed")
                    .await
                    .map_err(StorageIOError::read)?;
                v.flatten()
            }
        };
        if let Some(c) = v {
            self.shared.committed.fetch_max(c.index, Ordering::Relaxed);
        }
        Ok(v)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut rows = Vec::new();
        let mut cached = Vec::new();
        for entry in entries {
            let blob = serde_json::to_vec(&entry)
                .map_err(|e| StorageIOError::write_log_entry(entry.log_id, AnyError::new(&e)))?;
            self.shared
                .appended
                .bytes
                .fetch_add(blob.len() as u64, Ordering::Relaxed);
            rows.push((entry.log_id.index, blob));
            cached.push(entry);
        }
        self.shared
            .appended
            .entries
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        {
            let mut cache = self.shared.cache();
            for e in cached {
                cache.entries.insert(e.log_id.index, e);
            }
        }
        self.writer
            .send(WriteOp::Append(rows, callback))
            .map_err(|_| StorageIOError::write_logs(AnyError::error("raft log writer stopped")))?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        {
            let mut cache = self.shared.cache();
            let _ = cache.entries.split_off(&log_id.index);
        }
        self.run_op(|tx| WriteOp::Truncate(log_id.index, tx))
            .await
            .map_err(|e| StorageIOError::write_logs(e).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        {
            let mut cache = self.shared.cache();
            let keep = cache.entries.split_off(&(log_id.index + 1));
            cache.entries = keep;
            cache.last_purged = Some(log_id);
        }
        self.run_op(|tx| WriteOp::Purge(log_id, tx))
            .await
            .map_err(|e| StorageIOError::write_logs(e).into())
    }
}
