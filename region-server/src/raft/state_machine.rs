//! openraft's state machine over [`StateStore`], with snapshots as sqlite
//! files in `<data-dir>/snapshots/`.
//!
//! The state itself lives in memory; on start it is loaded from the latest
//! snapshot file and openraft re-applies the committed log after it.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, EntryPayload, RaftSnapshotBuilder, SnapshotMeta, StorageIOError, StoredMembership,
};

use super::{EntryResponse, LogId, NodeId, ServerNode, StorageError, TypeConfig};
use crate::state::snapshot_file::{self, SnapshotError};
use crate::state::{Command, CommandResponse, StateStore};

type Membership = StoredMembership<NodeId, ServerNode>;
type RaftSnapshotMeta = SnapshotMeta<NodeId, ServerNode>;

/// What is applied besides the tables, kept beside them under one lock so a
/// snapshot always pairs the tables with the log id they reflect.
#[derive(Default)]
struct Applied {
    last_applied: Option<LogId>,
    membership: Membership,
    snapshot_seq: u64,
}

/// The Raft state machine.
#[derive(Clone)]
pub struct StateMachine {
    store: StateStore,
    dir: PathBuf,
    applied: Arc<Mutex<Applied>>,
    apply_duration: Option<prometheus::Histogram>,
}

fn lock(m: &Mutex<Applied>) -> std::sync::MutexGuard<'_, Applied> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl StateMachine {
    /// Open the state machine, loading the latest snapshot in `dir` if any.
    pub async fn open(dir: &Path, store: StateStore) -> Result<Self, SnapshotError> {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|source| SnapshotError::Io {
                path: dir.display().to_string(),
                source,
            })?;
        let sm = Self {
            store,
            dir: dir.to_path_buf(),
            applied: Arc::default(),
            apply_duration: None,
        };
        let current = sm.current_path();
        if tokio::fs::try_exists(&current).await.unwrap_or(false) {
            let (meta, rows) = snapshot_file::read(&current).await?;
            let raft_meta = parse_raft_meta(&current, meta.raft.as_deref())?;
            let mut tables = snapshot_file::tables_from_rows(rows)?;
            tables.index = raft_meta.last_log_id.map(|l| l.index).unwrap_or(0);
            let mut a = lock(&sm.applied);
            sm.store.publish(tables);
            a.last_applied = raft_meta.last_log_id;
            a.membership = raft_meta.last_membership;
        }
        Ok(sm)
    }

    /// Time each applied batch of entries into `histogram`.
    pub fn with_apply_histogram(mut self, histogram: prometheus::Histogram) -> Self {
        self.apply_duration = Some(histogram);
        self
    }

    fn current_path(&self) -> PathBuf {
        self.dir.join("current.db")
    }

    /// The state store this machine applies to.
    pub fn store(&self) -> &StateStore {
        &self.store
    }
}

fn parse_raft_meta(path: &Path, raw: Option<&str>) -> Result<RaftSnapshotMeta, SnapshotError> {
    let invalid = |what: String| SnapshotError::Invalid {
        path: path.display().to_string(),
        what,
    };
    let raw = raw.ok_or_else(|| invalid("no raft meta".into()))?;
    serde_json::from_str(raw).map_err(|e| invalid(format!("raft meta: {e}")))
}

fn sm_err(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::read_state_machine(AnyError::error(e.to_string())).into()
}

/// Builds a snapshot of the state as of the moment it was asked for.
pub struct SnapshotBuilder {
    sm: StateMachine,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (tables, meta) = {
            let mut a = lock(&self.sm.applied);
            a.snapshot_seq += 1;
            let tables = self.sm.store.snapshot();
            let id = match a.last_applied {
                Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, a.snapshot_seq),
                None => format!("0-0-{}", a.snapshot_seq),
            };
            let meta = RaftSnapshotMeta {
                last_log_id: a.last_applied,
                last_membership: a.membership.clone(),
                snapshot_id: id,
            };
            (tables, meta)
        };
        let raw = serde_json::to_string(&meta)
            .map_err(|e| StorageIOError::write_snapshot(None, AnyError::new(&e)))?;
        let path = self.sm.current_path();
        snapshot_file::write(
            &path,
            &tables,
            &snapshot_file::SnapshotMeta {
                index: tables.index,
                raft: Some(raw),
            },
        )
        .await
        .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), AnyError::new(&e)))?;
        let bytes = tokio::fs::read(&path).await.map_err(|e| {
            StorageIOError::read_snapshot(Some(meta.signature()), AnyError::new(&e))
        })?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError> {
        let a = lock(&self.applied);
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<EntryResponse>, StorageError>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let _timer = self.apply_duration.as_ref().map(|h| h.start_timer());
        let mut a = lock(&self.applied);
        let mut tables = (*self.store.snapshot()).clone();
        let mut out = Vec::new();
        let trace = tracing::enabled!(target: "atoll::apply", tracing::Level::DEBUG);
        crate::leader::cpu_heavy(|| {
            for entry in entries {
                let index = entry.log_id.index;
                if trace {
                    let what = match &entry.payload {
                        EntryPayload::Blank => "blank".to_string(),
                        EntryPayload::Normal(cmd) => cmd.describe(),
                        EntryPayload::Membership(m) => format!("membership {m:?}"),
                    };
                    tracing::debug!(target: "atoll::apply", log_id = %entry.log_id, "apply {what}");
                }
                a.last_applied = Some(entry.log_id);
                tables.index = index;
                let response = match entry.payload {
                    EntryPayload::Blank => CommandResponse::Ok,
                    EntryPayload::Normal(Command::Batch(cmds)) => {
                        out.push(EntryResponse::Batch(tables.apply_batch(index, cmds)));
                        continue;
                    }
                    EntryPayload::Normal(cmd) => tables.apply(index, cmd),
                    EntryPayload::Membership(m) => {
                        a.membership = StoredMembership::new(Some(entry.log_id), m);
                        CommandResponse::Ok
                    }
                };
                out.push(EntryResponse::One(response));
            }
        });
        self.store.publish(tables);
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { sm: self.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &RaftSnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let incoming = self.dir.join("incoming.db");
        let werr = |e: &dyn std::fmt::Display| -> StorageError {
            StorageIOError::write_snapshot(Some(meta.signature()), AnyError::error(e.to_string()))
                .into()
        };
        tokio::fs::write(&incoming, snapshot.into_inner())
            .await
            .map_err(|e| werr(&e))?;
        let (_, rows) = snapshot_file::read(&incoming).await.map_err(|e| werr(&e))?;
        let mut tables = snapshot_file::tables_from_rows(rows).map_err(|e| werr(&e))?;
        tables.index = meta.last_log_id.map(|l| l.index).unwrap_or(0);
        // Keep our own copy with the meta openraft vouches for.
        let raw = serde_json::to_string(meta).map_err(|e| werr(&e))?;
        snapshot_file::write(
            &self.current_path(),
            &tables,
            &snapshot_file::SnapshotMeta {
                index: tables.index,
                raft: Some(raw),
            },
        )
        .await
        .map_err(|e| werr(&e))?;
        let _ = tokio::fs::remove_file(&incoming).await;
        let mut a = lock(&self.applied);
        self.store.publish(tables);
        a.last_applied = meta.last_log_id;
        a.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let path = self.current_path();
        if !tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(None);
        }
        let (meta, _) = snapshot_file::read(&path).await.map_err(sm_err)?;
        let meta = parse_raft_meta(&path, meta.raft.as_deref()).map_err(sm_err)?;
        let bytes = tokio::fs::read(&path).await.map_err(sm_err)?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}
