//! Storage tests: openraft's own conformance suite over the sqlite log store
//! and the state machine, and durability across reopening.

use std::sync::Arc;

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::testing::{log_id, StoreBuilder, Suite};
use openraft::{Entry, EntryPayload, RaftLogReader, Vote};

use super::log_store::LogStore;
use super::state_machine::StateMachine;
use super::{StorageError, TypeConfig};
use crate::state::StateStore;

/// Builds stores whose log keeps `cache_bytes` of its newest entries in
/// memory (`None`: the default budget).
struct Builder {
    cache_bytes: Option<usize>,
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, Arc<tempfile::TempDir>> for Builder {
    async fn build(
        &self,
    ) -> Result<(Arc<tempfile::TempDir>, LogStore, StateMachine), StorageError> {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        let path = dir.path().join("raft.db");
        let log = match self.cache_bytes {
            None => LogStore::open(&path).await,
            Some(b) => LogStore::open_with_cache(&path, b).await,
        }
        .expect("open log store");
        let sm = StateMachine::open(&dir.path().join("snapshots"), StateStore::default())
            .await
            .expect("open state machine");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    if let Err(e) = Suite::test_all(Builder { cache_bytes: None }) {
        panic!("openraft storage suite: {e}");
    }
}

/// The same suite with a log that keeps only its last entry (and those not
/// yet on disk) in memory, so every other read goes to sqlite.
#[test]
fn openraft_storage_suite_with_a_one_entry_cache() {
    if let Err(e) = Suite::test_all(Builder {
        cache_bytes: Some(0),
    }) {
        panic!("openraft storage suite, one-entry cache: {e}");
    }
}

#[tokio::test]
async fn evicted_entries_are_read_back_truncated_and_reopened() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("raft.db");
    let ids = |es: &[Entry<TypeConfig>]| -> Vec<(u64, u64)> {
        es.iter()
            .map(|e| (e.log_id.leader_id.term, e.log_id.index))
            .collect()
    };
    {
        let mut store = LogStore::open_with_cache(&path, 0).await.expect("open");
        append(&mut store, (1..=40).map(|i| blank(1, i)).collect()).await;
        // All but the last entry were evicted once on disk.
        let all = store.try_get_log_entries(1..=40).await.expect("read");
        assert_eq!(ids(&all), (1..=40).map(|i| (1, i)).collect::<Vec<_>>());
        let mid = store.try_get_log_entries(10..15).await.expect("read");
        assert_eq!(ids(&mid), (10..15).map(|i| (1, i)).collect::<Vec<_>>());

        // Truncating inside the evicted part: the last entry is read back
        // from disk, and entries of a new term take the truncated places.
        store.truncate(log_id(1, 1, 21)).await.expect("truncate");
        let state = store.get_log_state().await.expect("state");
        assert_eq!(state.last_log_id, Some(log_id(1, 1, 20)));
        append(&mut store, (21..=25).map(|i| blank(2, i)).collect()).await;
        store.purge(log_id(1, 1, 5)).await.expect("purge");
        let all = store.try_get_log_entries(0..100).await.expect("read");
        let want: Vec<(u64, u64)> = (6..=20)
            .map(|i| (1, i))
            .chain((21..=25).map(|i| (2, i)))
            .collect();
        assert_eq!(ids(&all), want);
    }
    // Reopened with a budget that holds a few entries: the same log.
    let mut store = LogStore::open_with_cache(&path, 200).await.expect("reopen");
    let state = store.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 5)));
    assert_eq!(state.last_log_id, Some(log_id(2, 1, 25)));
    let all = store.try_get_log_entries(0..100).await.expect("read");
    assert_eq!(all.len(), 20);
    assert_eq!(all[0].log_id, log_id(1, 1, 6));
    assert_eq!(all[19].log_id, log_id(2, 1, 25));
}

fn blank(term: u64, index: u64) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(term, 1, index),
        payload: EntryPayload::Blank,
    }
}

/// Appends and waits for the flush callback, as openraft does.
async fn append(store: &mut LogStore, entries: Vec<Entry<TypeConfig>>) {
    use openraft::storage::RaftLogStorageExt;
    store.blocking_append(entries).await.expect("append");
}

#[tokio::test]
async fn log_vote_and_purge_survive_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("raft.db");
    {
        let mut store = LogStore::open(&path).await.expect("open");
        store.save_vote(&Vote::new(3, 7)).await.expect("vote");
        append(&mut store, (1..=10).map(|i| blank(1, i)).collect()).await;
        store.truncate(log_id(1, 1, 9)).await.expect("truncate");
        store.purge(log_id(1, 1, 3)).await.expect("purge");
        store
            .save_committed(Some(log_id(1, 1, 8)))
            .await
            .expect("committed");
        // The committed hint is written with the next write.
        store.save_vote(&Vote::new(3, 7)).await.expect("vote");
    }
    let mut store = LogStore::open(&path).await.expect("reopen");
    assert_eq!(
        store.read_vote().await.expect("read vote"),
        Some(Vote::new(3, 7))
    );
    let state = store.get_log_state().await.expect("log state");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 3)));
    assert_eq!(state.last_log_id, Some(log_id(1, 1, 8)));
    let entries = store.try_get_log_entries(0..100).await.expect("entries");
    let idx: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
    assert_eq!(idx, vec![4, 5, 6, 7, 8]);
    assert_eq!(
        store.read_committed().await.expect("committed"),
        Some(log_id(1, 1, 8))
    );
}

#[tokio::test]
async fn committed_is_saved_once_the_log_is_idle() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("raft.db");
    let mut store = LogStore::open(&path).await.expect("open");
    append(&mut store, (1..=3).map(|i| blank(1, i)).collect()).await;
    store
        .save_committed(Some(log_id(1, 1, 2)))
        .await
        .expect("committed");
    assert_eq!(
        store.read_committed().await.expect("committed"),
        Some(log_id(1, 1, 2)),
        "the store answers with what it was told, saved or not"
    );
    tokio::time::sleep(super::log_store::COMMITTED_IDLE_FLUSH * 3).await;
    // A second reader of the same file sees it on disk.
    let mut other = LogStore::open(&path).await.expect("open again");
    assert_eq!(
        other.read_committed().await.expect("committed"),
        Some(log_id(1, 1, 2))
    );
    drop(store);
}

#[tokio::test]
async fn corrupt_log_file_refuses_to_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("raft.db");
    std::fs::write(
        &path,
        b"this is not an sqlite database, it is garbage ".repeat(200),
    )
    .expect("write");
    let err = match LogStore::open(&path).await {
        Ok(_) => panic!("a garbage file must not open"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("raft.db"), "error names the file: {err}");
}

#[tokio::test]
async fn a_batch_entry_answers_each_command() {
    use super::EntryResponse;
    use crate::state::{Command, CommandResponse};
    let dir = tempfile::tempdir().expect("temp dir");
    let mut sm = StateMachine::open(dir.path(), StateStore::default())
        .await
        .expect("open");
    let register = |id: &str| Command::JobRegister {
        job: Box::new(crate::state::tests::job(id)),
        eval: None,
        now: 5,
        enforce_index: None,
    };
    let entries = vec![
        Entry {
            log_id: log_id(1, 1, 1),
            payload: EntryPayload::Normal(register("web")),
        },
        Entry {
            log_id: log_id(1, 1, 2),
            payload: EntryPayload::Normal(Command::Batch(vec![register("api"), register("db")])),
        },
    ];
    let out = sm.apply(entries).await.expect("apply");
    assert_eq!(out.len(), 2, "one response per entry");
    assert!(matches!(
        &out[0],
        EntryResponse::One(CommandResponse::Job { .. })
    ));
    match &out[1] {
        EntryResponse::Batch(r) => {
            assert_eq!(r.len(), 2);
            assert!(r.iter().all(|r| matches!(
                r,
                CommandResponse::Job {
                    job_modify_index: 2,
                    ..
                }
            )));
        }
        other => panic!("a batch entry answered {other:?}"),
    }
    let (applied, _) = sm.applied_state().await.expect("applied");
    assert_eq!(applied, Some(log_id(1, 1, 2)));
}

#[tokio::test]
async fn state_machine_snapshot_roundtrip() {
    use openraft::RaftSnapshotBuilder;
    let dir = tempfile::tempdir().expect("temp dir");
    let store = StateStore::default();
    let mut sm = StateMachine::open(dir.path(), store.clone())
        .await
        .expect("open");
    let job = crate::state::tests::job("web");
    let entry = Entry {
        log_id: log_id(1, 1, 1),
        payload: EntryPayload::Normal(crate::state::Command::JobRegister {
            job: Box::new(job),
            eval: None,
            now: 5,
            enforce_index: None,
        }),
    };
    sm.apply(vec![entry]).await.expect("apply");
    let mut builder = sm.get_snapshot_builder().await;
    let snap = builder.build_snapshot().await.expect("build");
    assert_eq!(snap.meta.last_log_id, Some(log_id(1, 1, 1)));

    // Install it into a fresh machine, as a lagging follower would.
    let dir2 = tempfile::tempdir().expect("temp dir");
    let store2 = StateStore::default();
    let mut sm2 = StateMachine::open(dir2.path(), store2.clone())
        .await
        .expect("open");
    sm2.install_snapshot(&snap.meta, snap.snapshot)
        .await
        .expect("install");
    let (applied, _) = sm2.applied_state().await.expect("applied");
    assert_eq!(applied, Some(log_id(1, 1, 1)));
    assert_eq!(
        store2.snapshot().job("default", "web").map(|j| j.version),
        Some(0)
    );

    // And reopening loads the snapshot from disk.
    let store3 = StateStore::default();
    let mut sm3 = StateMachine::open(dir2.path(), store3.clone())
        .await
        .expect("reopen");
    let (applied, _) = sm3.applied_state().await.expect("applied");
    assert_eq!(applied, Some(log_id(1, 1, 1)));
    assert!(store3.snapshot().job("default", "web").is_some());
}
