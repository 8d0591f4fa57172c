//! The Raft log and vote in sqlite.
//!
//! One writer task owns the write connection and applies operations in the
//! order openraft issued them. Appends that queue up while a commit is under
//! way are committed together in one transaction (group commit), and each
//! append's flushed callback fires only after its transaction is on disk
//! (WAL with `synchronous=FULL`). The newest entries are also kept in
//! memory, decoded, up to a budget of encoded bytes ([`DEFAULT_CACHE_BYTES`]):
//! replication and apply read the tail of the log, which is always there.
//! Older entries are evicted once they are on disk and read back from
//! sqlite (over a connection of their own) when a lagging follower or a
//! restart needs them. Without the bound, a region that commits large
//! entries (plans of thousands of allocations) held a second, decoded copy
//! of everything since the last snapshot.
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
use std::ops::{Bound, RangeBounds};
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

/// How many encoded bytes of the newest entries the log keeps decoded in
/// memory by default (`[raft] log_cache_mb`; at least the last entry and
/// every entry not yet on disk are kept, whatever their size).
pub const DEFAULT_CACHE_BYTES: usize = 32 << 20;

/// Encoded entries `(log id, JSON)` of one append.
type Rows = Vec<(LogId, Vec<u8>)>;

/// Encoded entries of one append, with its flush callback.
type AppendBatch = (Rows, LogFlushed<TypeConfig>);

enum WriteOp {
    Append(Rows, LogFlushed<TypeConfig>),
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

/// One cached entry.
struct Cached {
    entry: Entry<TypeConfig>,
    /// Bytes of its encoding.
    bytes: usize,
    /// Its transaction is on disk: it may be evicted.
    durable: bool,
}

/// The newest entries of the log: a contiguous run that ends at the last
/// entry. Everything between `last_purged` and the first cached entry is
/// on disk.
struct Cache {
    entries: BTreeMap<u64, Cached>,
    /// Sum of `Cached::bytes`.
    bytes: usize,
    /// How many encoded bytes to keep.
    budget: usize,
    /// The last entry of the log (cached or not), if any is left after
    /// the last purge.
    last: Option<LogId>,
    last_purged: Option<LogId>,
}

impl Cache {
    /// Index of the first cached entry; past the end when none is.
    fn first_index(&self) -> u64 {
        match self.entries.keys().next() {
            Some(i) => *i,
            None => self.last.or(self.last_purged).map_or(0, |l| l.index) + 1,
        }
    }

    /// Drops the oldest entries that are on disk while the cache is over
    /// its budget, always keeping the last one.
    fn evict(&mut self) {
        while self.bytes > self.budget && self.entries.len() > 1 {
            let Some(first) = self.entries.first_entry() else {
                return;
            };
            if !first.get().durable {
                return;
            }
            self.bytes -= first.remove().bytes;
        }
    }

    /// Entries at and after `from` leave the cache.
    fn remove_from(&mut self, from: u64) {
        for (_, c) in self.entries.split_off(&from) {
            self.bytes -= c.bytes;
        }
    }

    /// Marks the entries of a committed transaction as on disk. An entry
    /// truncated meanwhile (and perhaps replaced by one of another term)
    /// is left alone. (The same log id appended again after a truncation
    /// cannot be marked by the older transaction: openraft 0.9 awaits each
    /// append's flush before it issues its next log command.)
    fn mark_durable(&mut self, rows: &Rows) {
        for (log_id, _) in rows {
            if let Some(c) = self.entries.get_mut(&log_id.index) {
                if c.entry.log_id == *log_id {
                    c.durable = true;
                }
            }
        }
    }
}

struct Shared {
    cache: Mutex<Cache>,
    /// Read-only connections for entries that left the cache (WAL: they
    /// never wait for the writer).
    readers: SqlitePool,
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

/// A cheap reader of the log, for replication.
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
    /// Open (or create) the log at `path`, keeping the default budget of
    /// its newest entries in memory.
    pub async fn open(path: &Path) -> Result<Self, OpenError> {
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES).await
    }

    /// Open (or create) the log at `path`, keeping up to `cache_bytes`
    /// encoded bytes of its newest entries decoded in memory.
    pub async fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<Self, OpenError> {
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

        // Every row is decoded once (a damaged one refuses the open); the
        // newest within the budget stay in memory.
        let mut entries = BTreeMap::new();
        let mut bytes = 0usize;
        let mut last = None;
        {
            use futures::TryStreamExt;
            let mut rows = sqlx::query("SELECT idx, entry FROM log ORDER BY idx").fetch(&pool);
            while let Some(row) = rows.try_next().await.map_err(sql_err)? {
                let idx: i64 = row.try_get(0).map_err(sql_err)?;
                let blob: &[u8] = row.try_get(1).map_err(sql_err)?;
                let entry: Entry<TypeConfig> =
                    serde_json::from_slice(blob).map_err(|e| OpenError::Corrupt {
                        path: p.clone(),
                        what: format!("log entry {idx}: {e}"),
                    })?;
                last = Some(entry.log_id);
                bytes += blob.len();
                entries.insert(
                    idx as u64,
                    Cached {
                        entry,
                        bytes: blob.len(),
                        durable: true,
                    },
                );
                while bytes > cache_bytes && entries.len() > 1 {
                    if let Some((_, c)) = entries.pop_first() {
                        bytes -= c.bytes;
                    }
                }
            }
        }
        let last_purged = read_meta::<LogId>(&pool, "last_purged")
            .await
            .map_err(|e| OpenError::Corrupt {
                path: p.clone(),
                what: format!("last_purged: {e}"),
            })?;
        let readers = SqlitePoolOptions::new()
            .max_connections(2)
            .min_connections(0)
            .connect_lazy_with(sqlite_options(path).read_only(true));

        let shared = Arc::new(Shared {
            cache: Mutex::new(Cache {
                entries,
                bytes,
                budget: cache_bytes,
                last,
                last_purged,
            }),
            readers,
            committed: Arc::default(),
            committed_id: Mutex::new(None),
            appended: Arc::default(),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(writer_task(pool.clone(), shared.clone(), rx));
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
async fn writer_task(
    pool: SqlitePool,
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<WriteOp>,
) {
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
                if result.is_ok() {
                    let mut cache = shared.cache();
                    for (rows, _) in &batch {
                        cache.mark_durable(rows);
                    }
                    cache.evict();
                }
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
        for (log_id, blob) in entries {
            sqlx::query("INSERT OR REPLACE INTO log (idx, entry) VALUES (?, ?)")
                .bind(log_id.index as i64)
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

/// Reads `range` of the log: the cached tail from memory, what lies
/// before it from sqlite.
async fn read_range<RB: RangeBounds<u64>>(
    shared: &Shared,
    range: RB,
) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
    let start = match range.start_bound() {
        Bound::Included(i) => *i,
        Bound::Excluded(i) => i.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(i) => Some(i.saturating_add(1)),
        Bound::Excluded(i) => Some(*i),
        Bound::Unbounded => None,
    };
    let (first_cached, cached) = {
        let cache = shared.cache();
        let first = cache.first_index();
        let from = start.max(first);
        let tail: Vec<Entry<TypeConfig>> = if end.is_some_and(|end| end <= from) {
            Vec::new()
        } else {
            let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
            cache
                .entries
                .range((Bound::Included(from), upper))
                .map(|(_, c)| c.entry.clone())
                .collect()
        };
        (first, tail)
    };
    let disk_end = end.map_or(first_cached, |e| e.min(first_cached));
    if start >= disk_end {
        return Ok(cached);
    }
    let mut out = read_rows(&shared.readers, start, disk_end).await?;
    out.extend(cached);
    Ok(out)
}

/// Entries `from..to` as sqlite has them (entries purged meanwhile are
/// simply missing: openraft then sends a snapshot).
async fn read_rows(
    pool: &SqlitePool,
    from: u64,
    to: u64,
) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
    let read_err = |e: &dyn std::error::Error| -> StorageError {
        StorageIOError::read_logs(AnyError::error(e.to_string())).into()
    };
    let rows = sqlx::query("SELECT idx, entry FROM log WHERE idx >= ? AND idx < ? ORDER BY idx")
        .bind(from as i64)
        .bind(to.min(i64::MAX as u64) as i64)
        .fetch_all(pool)
        .await
        .map_err(|e| read_err(&e))?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let blob: &[u8] = row.try_get(1).map_err(|e| read_err(&e))?;
        let entry: Entry<TypeConfig> = serde_json::from_slice(blob).map_err(|e| read_err(&e))?;
        out.push(entry);
    }
    Ok(out)
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        read_range(&self.shared, range).await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        read_range(&self.shared, range).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let cache = self.shared.cache();
        let last_purged = cache.last_purged;
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: cache.last.or(last_purged),
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
            let id = entry.log_id;
            cached.push((entry, blob.len()));
            rows.push((id, blob));
        }
        self.shared
            .appended
            .entries
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        {
            let mut cache = self.shared.cache();
            for (entry, bytes) in cached {
                cache.last = Some(entry.log_id);
                cache.bytes += bytes;
                let old = cache.entries.insert(
                    entry.log_id.index,
                    Cached {
                        entry,
                        bytes,
                        durable: false,
                    },
                );
                if let Some(old) = old {
                    cache.bytes -= old.bytes;
                }
            }
            cache.evict();
        }
        self.writer
            .send(WriteOp::Append(rows, callback))
            .map_err(|_| StorageIOError::write_logs(AnyError::error("raft log writer stopped")))?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The entry before the truncated ones becomes the last: in the
        // cache, or the purge point, or (evicted, so on disk) in sqlite.
        let (new_last, read_back) = {
            let mut cache = self.shared.cache();
            cache.remove_from(log_id.index);
            match log_id.index.checked_sub(1) {
                None => (None, None),
                Some(b) if cache.last_purged.is_some_and(|p| p.index >= b) => (None, None),
                Some(b) => match cache.entries.get(&b) {
                    Some(c) => (Some(c.entry.log_id), None),
                    None => (None, Some(b)),
                },
            }
        };
        let new_last = match read_back {
            None => new_last,
            Some(b) => read_rows(&self.shared.readers, b, b + 1)
                .await?
                .pop()
                .map(|e| e.log_id),
        };
        self.shared.cache().last = new_last;
        self.run_op(|tx| WriteOp::Truncate(log_id.index, tx))
            .await
            .map_err(|e| StorageIOError::write_logs(e).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        {
            let mut cache = self.shared.cache();
            let keep = cache.entries.split_off(&(log_id.index + 1));
            let purged = std::mem::replace(&mut cache.entries, keep);
            for c in purged.into_values() {
                cache.bytes -= c.bytes;
            }
            if cache.last.is_some_and(|l| l.index <= log_id.index) {
                cache.last = None;
            }
            cache.last_purged = Some(log_id);
        }
        self.run_op(|tx| WriteOp::Purge(log_id, tx))
            .await
            .map_err(|e| StorageIOError::write_logs(e).into())
    }
}
