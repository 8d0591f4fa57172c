//! Proposals to the leader's Raft: commands that arrive while earlier ones
//! are being committed travel together as one [`Command::Batch`] entry.
//!
//! openraft 0.9 writes each proposed entry to the log (and waits for it to
//! be on disk) inside its core task before it replicates it, one entry at a
//! time: every entry costs the leader one fsync before it is even sent, and
//! the core does nothing else meanwhile. A proposer keeps at most
//! [`MAX_IN_FLIGHT`] entries under way; commands that arrive meanwhile wait
//! and go out together in the next entry, so N concurrent writers share one
//! fsync on the leader and one on each follower. A lone command goes out
//! as itself, at once.
//!
//! A proposal belongs to the term in which it was made. While a leader is
//! cut off from its quorum its proposals cannot commit; commands keep
//! queuing behind them, and their callers give up. None of them may be
//! proposed later: not after the caller went away (it already answered
//! its client, or retried elsewhere), and not in a later term in which
//! this server leads again (that would apply a write long after it was
//! answered, after writes that followed it). So a queued proposal is
//! dropped when its caller is gone, and refused (`NotLeader`) unless this
//! server still leads in the term it was made in.

use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::{EntryResponse, NodeId, Raft, ServerNode};
use crate::state::{Command, CommandResponse};

/// Entries proposed and not yet committed and applied, at most.
pub const MAX_IN_FLIGHT: usize = 2;
/// Commands in one batch, at most.
pub const MAX_BATCH_COMMANDS: usize = 256;
/// Encoded bytes of the commands of one batch, at most (a single larger
/// command still goes, alone): a follower must receive an entry within one
/// heartbeat interval (see `network::MAX_APPEND_BYTES`).
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// Why a proposal was not committed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProposeError {
    /// This server is not (or no longer) the leader.
    #[error("not the leader")]
    NotLeader,
    /// Raft refused or failed the write.
    #[error("raft write: {0}")]
    Raft(String),
    /// The proposer's task is gone (the server is stopping).
    #[error("raft proposer stopped")]
    Stopped,
}

type Reply = oneshot::Sender<Result<(CommandResponse, u64), ProposeError>>;

struct Proposal {
    /// The term in which this server led when the command was submitted.
    term: u64,
    cmd: Command,
    /// Encoded size of `cmd`.
    bytes: usize,
    reply: Reply,
}

/// Batches concurrent commands into Raft entries. Cheap to clone.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::UnboundedSender<Proposal>,
    raft: Raft,
}

/// The term in which this server leads, if it does.
fn leading_term(raft: &Raft) -> Option<u64> {
    let m = raft.metrics();
    let m = m.borrow();
    (m.state == openraft::ServerState::Leader).then_some(m.current_term)
}

/// Whether `p` may still be proposed: its caller waits for it, and this
/// server leads in the term it was submitted in. Answers it if not.
fn still_wanted(raft: &Raft, p: Proposal) -> Option<Proposal> {
    if p.reply.is_closed() {
        return None;
    }
    if leading_term(raft) != Some(p.term) {
        let _ = p.reply.send(Err(ProposeError::NotLeader));
        return None;
    }
    Some(p)
}

impl Proposer {
    /// A proposer writing to `raft`; its task ends when every clone is
    /// dropped.
    pub fn new(raft: Raft) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(raft.clone(), rx));
        Self { tx, raft }
    }

    /// Commit `cmd` (this server must be the leader) and return its
    /// response and the Raft index of the entry that carried it.
    pub async fn write(&self, cmd: Command) -> Result<(CommandResponse, u64), ProposeError> {
        let term = leading_term(&self.raft).ok_or(ProposeError::NotLeader)?;
        self.write_in_term(cmd, term).await
    }

    /// Commit `cmd` only if this server leads in `term` until it is
    /// proposed.
    pub async fn write_in_term(
        &self,
        cmd: Command,
        term: u64,
    ) -> Result<(CommandResponse, u64), ProposeError> {
        if leading_term(&self.raft) != Some(term) {
            return Err(ProposeError::NotLeader);
        }
        let bytes = cmd.encoded_len();
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Proposal {
                term,
                cmd,
                bytes,
                reply,
            })
            .map_err(|_| ProposeError::Stopped)?;
        rx.await.map_err(|_| ProposeError::Stopped)?
    }
}

async fn run(raft: Raft, mut rx: mpsc::UnboundedReceiver<Proposal>) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut held: Option<Proposal> = None;
    loop {
        // Wait for a free slot first: commands queue up meanwhile.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let first = match held.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        // Checked after the slot was won: proposals wait for one as long
        // as earlier entries do not commit (a leader cut off from its
        // quorum), and only a live caller in the same term may go on.
        let Some(first) = still_wanted(&raft, first) else {
            continue;
        };
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_COMMANDS {
            match rx.try_recv() {
                Ok(p) => {
                    let Some(p) = still_wanted(&raft, p) else {
                        continue;
                    };
                    if bytes + p.bytes > MAX_BATCH_BYTES {
                        held = Some(p);
                        break;
                    }
                    bytes += p.bytes;
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            commit(&raft, batch).await;
            drop(permit);
        });
    }
}

async fn commit(raft: &Raft, mut batch: Vec<Proposal>) {
    if batch.len() == 1 {
        let p = batch.remove(0);
        let r = raft
            .client_write(p.cmd)
            .await
            .map_err(propose_error)
            .and_then(|r| match r.data {
                EntryResponse::One(resp) => Ok((resp, r.log_id.index)),
                other => Err(ProposeError::Raft(format!(
                    "a single command at index {} answered {other:?}",
                    r.log_id.index
                ))),
            });
        let _ = p.reply.send(r);
        return;
    }
    let (cmds, replies): (Vec<Command>, Vec<Reply>) =
        batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
    let n = cmds.len();
    match raft.client_write(Command::Batch(cmds)).await {
        Ok(r) => {
            let index = r.log_id.index;
            match r.data {
                EntryResponse::Batch(responses) if responses.len() == n => {
                    for (reply, resp) in replies.into_iter().zip(responses) {
                        let _ = reply.send(Ok((resp, index)));
                    }
                }
                other => {
                    let e = ProposeError::Raft(format!(
                        "a batch of {n} commands at index {index} answered {other:?}"
                    ));
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        }
        Err(e) => {
            let e = propose_error(e);
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

fn propose_error(e: RaftError<NodeId, ClientWriteError<NodeId, ServerNode>>) -> ProposeError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => ProposeError::NotLeader,
        e => ProposeError::Raft(e.to_string()),
    }
}
