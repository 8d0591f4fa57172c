//! A linearizability checker for a history of per-job registers, in the
//! manner of Wing & Gong with Lowe's memoization (what Porcupine and Knossos
//! do), plus the lost-write check.
//!
//! Each job is a register: `Write(v)` sets it to `Some(v)`, `Delete` empties
//! it, `Read` must return the current value. Registers are independent
//! (linearizability is compositional), so every key is checked on its own.
//! Operations whose outcome is unknown (no answer, 5xx) may take effect at
//! any point after their invocation, or never: their completion is taken as
//! infinite and the search may leave them out. Failed operations and failed
//! reads constrain nothing and are ignored.

use std::collections::{BTreeMap, HashSet};

use super::history::{Op, OpKind, Outcome};

/// One key whose operations cannot be linearized.
#[derive(Debug, Clone)]
pub struct Violation {
    /// The job id.
    pub key: String,
    /// The operations of that key the search considered, by invocation.
    pub ops: Vec<Op>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "key {}: {} operations cannot be linearized:",
            self.key,
            self.ops.len()
        )?;
        for op in &self.ops {
            writeln!(
                f,
                "  c{} {:?} {:?} [{}..{}] idx {} via {}",
                op.client, op.kind, op.outcome, op.invoke, op.complete, op.index, op.via
            )?;
        }
        Ok(())
    }
}

/// The result of checking a history.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Keys checked.
    pub keys: usize,
    /// Keys whose history is not linearizable.
    pub violations: Vec<Violation>,
    /// Keys where the search gave up (too many states); counted apart,
    /// never as a pass.
    pub undecided: Vec<String>,
}

/// How many distinct search states one key may visit before the checker
/// gives up on it (reported as undecided, which fails a scenario).
const STATE_BUDGET: usize = 2_000_000;

/// Check every key of `ops` for linearizability.
pub fn check(ops: &[Op]) -> Report {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    let mut report = Report::default();
    for (key, ops) in by_key {
        report.keys += 1;
        match check_key(&ops) {
            Some(true) => {}
            Some(false) => report.violations.push(Violation {
                key: key.to_string(),
                ops: relevant(&ops).into_iter().cloned().collect(),
            }),
            None => report.undecided.push(key.to_string()),
        }
    }
    report
}

/// The operations of one key that constrain the search: acknowledged
/// operations, and writes/deletes of unknown outcome. An unknown write
/// whose value no read ever returned is left out: it can only have
/// overwritten a value, never explained a read, so omitting it (which the
/// model allows) never turns a linearizable history into a violation.
fn relevant<'a>(ops: &[&'a Op]) -> Vec<&'a Op> {
    let seen: HashSet<Option<u64>> = ops
        .iter()
        .filter(|o| o.kind == OpKind::Read)
        .filter_map(|o| match o.outcome {
            Outcome::Ok(v) => Some(v),
            _ => None,
        })
        .collect();
    let mut out: Vec<&Op> = ops
        .iter()
        .copied()
        .filter(|o| match (o.kind, o.outcome) {
            (_, Outcome::Failed) => false,
            (OpKind::Read, Outcome::Unknown) => false,
            (OpKind::Write(v), Outcome::Unknown) => seen.contains(&Some(v)),
            _ => true,
        })
        .collect();
    out.sort_by_key(|o| (o.invoke, o.complete));
    out
}

struct Entry {
    kind: OpKind,
    /// For acknowledged reads, the value returned.
    read: Option<Option<u64>>,
    invoke: u64,
    /// `u64::MAX` for unknown outcomes.
    complete: u64,
    required: bool,
}

/// `Some(true)` linearizable, `Some(false)` not, `None` undecided.
fn check_key(ops: &[&Op]) -> Option<bool> {
    let entries: Vec<Entry> = relevant(ops)
        .into_iter()
        .map(|o| Entry {
            kind: o.kind,
            read: match (o.kind, o.outcome) {
                (OpKind::Read, Outcome::Ok(v)) => Some(v),
                _ => None,
            },
            invoke: o.invoke,
            complete: match o.outcome {
                Outcome::Unknown => u64::MAX,
                _ => o.complete,
            },
            required: o.acknowledged(),
        })
        .collect();
    let required = entries.iter().filter(|e| e.required).count();
    let mut search = Search {
        entries: &entries,
        done: vec![0u64; entries.len().div_ceil(64)],
        seen: HashSet::new(),
        budget_exhausted: false,
    };
    let ok = search.dfs(None, required);
    if search.budget_exhausted && !ok {
        return None;
    }
    Some(ok)
}

struct Search<'a> {
    entries: &'a [Entry],
    done: Vec<u64>,
    seen: HashSet<(Vec<u64>, Option<u64>)>,
    budget_exhausted: bool,
}

impl Search<'_> {
    fn is_done(&self, i: usize) -> bool {
        self.done[i / 64] & (1 << (i % 64)) != 0
    }

    fn flip(&mut self, i: usize) {
        self.done[i / 64] ^= 1 << (i % 64);
    }

    /// Depth-first search for a linearization of the remaining entries,
    /// from register value `state` with `left` acknowledged entries to place.
    fn dfs(&mut self, state: Option<u64>, left: usize) -> bool {
        if left == 0 {
            return true;
        }
        if self.seen.len() >= STATE_BUDGET {
            self.budget_exhausted = true;
            return false;
        }
        if !self.seen.insert((self.done.clone(), state)) {
            return false;
        }
        // An entry may go next only if no pending entry completed before it
        // was invoked.
        let min_complete = (0..self.entries.len())
            .filter(|i| !self.is_done(*i))
            .map(|i| self.entries[i].complete)
            .min()
            .unwrap_or(u64::MAX);
        for i in 0..self.entries.len() {
            if self.is_done(i) {
                continue;
            }
            let e = &self.entries[i];
            if e.invoke > min_complete {
                // Entries are sorted by invocation: none later can go either.
                break;
            }
            let next = match e.kind {
                OpKind::Write(v) => Some(v),
                OpKind::Delete => None,
                OpKind::Read => {
                    if e.read != Some(state) {
                        continue;
                    }
                    state
                }
            };
            let required = usize::from(e.required);
            self.flip(i);
            let ok = self.dfs(next, left - required);
            self.flip(i);
            if ok {
                return true;
            }
            if self.budget_exhausted {
                return false;
            }
        }
        false
    }
}

/// Acknowledged writes (and deletes) that the final state does not reflect.
///
/// `final_value` is what a linearizable read of the key returned once every
/// fault had healed. The final value was produced by some write (or delete,
/// or the initial empty state); an acknowledged write `w` is lost when every
/// operation that could have produced the final value completed before `w`
/// was even invoked, so `w` must have overwritten it.
pub fn lost_writes(ops: &[Op], key: &str, final_value: Option<u64>) -> Vec<Op> {
    let of_key: Vec<&Op> = ops.iter().filter(|o| o.key == key).collect();
    // Completion times of the operations that could have produced the final
    // value (unknown outcomes: infinite). The initial empty state precedes
    // everything: with no producer but it, every acknowledged write is lost.
    let producers: Vec<u64> = of_key
        .iter()
        .filter(|o| o.outcome != Outcome::Failed)
        .filter(|o| match (o.kind, final_value) {
            (OpKind::Write(v), Some(f)) => v == f,
            (OpKind::Delete, None) => true,
            _ => false,
        })
        .map(|o| match o.outcome {
            Outcome::Unknown => u64::MAX,
            _ => o.complete,
        })
        .collect();
    let latest_producer = producers.iter().copied().max();
    of_key
        .into_iter()
        .filter(|o| o.acknowledged() && matches!(o.kind, OpKind::Write(_) | OpKind::Delete))
        .filter(|w| latest_producer.is_none_or(|p| p < w.invoke))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: usize, kind: OpKind, invoke: u64, complete: u64, outcome: Outcome) -> Op {
        Op {
            client,
            key: "j".into(),
            kind,
            invoke,
            complete,
            outcome,
            index: 0,
            via: "t".into(),
            error: None,
        }
    }

    fn w(c: usize, v: u64, a: u64, b: u64) -> Op {
        op(c, OpKind::Write(v), a, b, Outcome::Ok(None))
    }

    fn r(c: usize, seen: Option<u64>, a: u64, b: u64) -> Op {
        op(c, OpKind::Read, a, b, Outcome::Ok(seen))
    }

    fn linearizable(ops: &[Op]) -> bool {
        let rep = check(ops);
        assert!(rep.undecided.is_empty());
        rep.violations.is_empty()
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = vec![
            r(0, None, 0, 1),
            w(0, 1, 2, 3),
            r(1, Some(1), 4, 5),
            op(0, OpKind::Delete, 6, 7, Outcome::Ok(None)),
            r(1, None, 8, 9),
        ];
        assert!(linearizable(&h));
    }

    #[test]
    fn concurrent_reads_may_see_either_value() {
        // w1 [0,10] overlaps both reads: one sees the old value, the next
        // the new one.
        let h = vec![
            w(0, 1, 0, 10),
            r(1, None, 1, 2),
            r(2, Some(1), 3, 4),
            r(1, Some(1), 11, 12),
        ];
        assert!(linearizable(&h));
    }

    #[test]
    fn stale_read_is_flagged() {
        // w1 completed at 3; a read invoked at 4 still returns nothing.
        let h = vec![w(0, 1, 0, 3), r(1, None, 4, 5)];
        assert!(!linearizable(&h));
        // A newer value seen, then an older one: also stale.
        let h = vec![
            w(0, 1, 0, 1),
            w(0, 2, 2, 3),
            r(1, Some(2), 4, 5),
            r(2, Some(1), 6, 7),
        ];
        let rep = check(&h);
        assert_eq!(rep.violations.len(), 1);
        assert_eq!(rep.violations[0].key, "j");
    }

    #[test]
    fn reads_may_not_flip_back_and_forth() {
        // Both writes overlap both reads, yet 1 then 2 then 1 is impossible
        // with one write of each.
        let h = vec![
            w(0, 1, 0, 100),
            w(1, 2, 0, 100),
            r(2, Some(1), 10, 11),
            r(2, Some(2), 20, 21),
            r(2, Some(1), 30, 31),
        ];
        assert!(!linearizable(&h));
    }

    #[test]
    fn unknown_write_may_or_may_not_take_effect() {
        let h = vec![
            op(0, OpKind::Write(1), 0, 1, Outcome::Unknown),
            r(1, None, 5, 6),
            r(1, Some(1), 7, 8),
        ];
        assert!(linearizable(&h));
        let h = vec![
            op(0, OpKind::Write(1), 0, 1, Outcome::Unknown),
            r(1, None, 5, 6),
        ];
        assert!(linearizable(&h));
        // But once seen, it cannot un-happen.
        let h = vec![
            op(0, OpKind::Write(1), 0, 1, Outcome::Unknown),
            r(1, Some(1), 5, 6),
            r(1, None, 7, 8),
        ];
        assert!(!linearizable(&h));
    }

    #[test]
    fn failed_operations_constrain_nothing() {
        let h = vec![
            op(0, OpKind::Write(1), 0, 1, Outcome::Failed),
            r(1, None, 5, 6),
            op(1, OpKind::Read, 7, 8, Outcome::Failed),
        ];
        assert!(linearizable(&h));
        // A value nobody wrote is never linearizable.
        let h = vec![r(1, Some(9), 0, 1)];
        assert!(!linearizable(&h));
    }

    #[test]
    fn keys_are_checked_apart() {
        let mut a = w(0, 1, 0, 1);
        a.key = "a".into();
        let mut b = r(1, Some(1), 2, 3);
        b.key = "b".into();
        let rep = check(&[a, b]);
        assert_eq!(rep.keys, 2);
        assert_eq!(rep.violations.len(), 1);
        assert_eq!(rep.violations[0].key, "b");
    }

    #[test]
    fn lost_write_is_flagged() {
        let h = vec![w(0, 1, 0, 1), w(0, 2, 2, 3)];
        // Final state 1: the acknowledged write of 2 came strictly after.
        let lost = lost_writes(&h, "j", Some(1));
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].kind, OpKind::Write(2));
        assert!(lost_writes(&h, "j", Some(2)).is_empty());
        // Final state empty with no delete: both writes lost.
        assert_eq!(lost_writes(&h, "j", None).len(), 2);
        // A value nobody wrote: every acknowledged write lost.
        assert_eq!(lost_writes(&h, "j", Some(7)).len(), 2);
    }

    #[test]
    fn concurrent_writes_either_may_win() {
        let h = vec![w(0, 1, 0, 10), w(1, 2, 5, 15)];
        assert!(lost_writes(&h, "j", Some(1)).is_empty());
        assert!(lost_writes(&h, "j", Some(2)).is_empty());
        let mut with_delete = h.clone();
        with_delete.push(op(2, OpKind::Delete, 20, 21, Outcome::Ok(None)));
        assert!(lost_writes(&with_delete, "j", None).is_empty());
        assert_eq!(lost_writes(&with_delete, "j", Some(2)).len(), 1);
    }

    #[test]
    fn memoization_keeps_wide_histories_fast() {
        // 8 clients, each writing then reading its own value, all
        // overlapping: many interleavings, few distinct states.
        let mut h = Vec::new();
        for c in 0..8u64 {
            h.push(w(c as usize, c + 1, c, 1000 + c));
        }
        for c in 0..8u64 {
            h.push(r(c as usize, Some(8), 2000 + c * 10, 2001 + c * 10));
        }
        assert!(linearizable(&h));
    }
}
