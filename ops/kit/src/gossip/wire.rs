//! What travels inside a sealed packet: one kind byte, then its body.
//!
//! - `SWIM`: a foca datagram.
//! - `JOIN`: "who are you?" sent to a seed address (whose identity the joiner
//!   does not know yet); empty body.
//! - `WELCOME`: the seed's answer, its identity; the joiner then announces
//!   itself to that identity (SWIM) and exchanges full state with it.
//! - `SYNC`: a chunk of full state (members with their SWIM state, and
//!   metadata notes), memberlist's push/pull over UDP. `reply` asks the
//!   receiver to send its own full state back.

use foca::Member;
use serde::{Deserialize, Serialize};

use super::identity::Id;
use super::notes::Note;

pub(crate) const SWIM: u8 = 0;
pub(crate) const JOIN: u8 = 1;
pub(crate) const WELCOME: u8 = 2;
pub(crate) const SYNC: u8 = 3;

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Sync {
    pub(crate) reply: bool,
    pub(crate) members: Vec<Member<Id>>,
    pub(crate) notes: Vec<Note>,
}

/// Split a full state into `Sync` bodies of at most `limit` bytes each
/// (postcard); only the first asks for a reply. Always at least one chunk.
pub(crate) fn sync_chunks(
    reply: bool,
    members: Vec<Member<Id>>,
    notes: Vec<Note>,
    limit: usize,
) -> Vec<Vec<u8>> {
    // `reply` + two length prefixes (varints of at most 3 bytes each).
    const FIXED: usize = 1 + 3 + 3;
    let mut out = Vec::new();
    let mut cur = Sync {
        reply,
        members: Vec::new(),
        notes: Vec::new(),
    };
    let mut size = FIXED;
    let flush = |cur: &mut Sync, size: &mut usize, out: &mut Vec<Vec<u8>>| {
        if let Ok(bytes) = postcard::to_allocvec(&*cur) {
            out.push(bytes);
        }
        cur.reply = false;
        cur.members.clear();
        cur.notes.clear();
        *size = FIXED;
    };
    for m in members {
        let s = encoded_len(&m);
        if size + s > limit && !(cur.members.is_empty() && cur.notes.is_empty()) {
            flush(&mut cur, &mut size, &mut out);
        }
        size += s;
        cur.members.push(m);
    }
    for n in notes {
        let s = encoded_len(&n);
        if size + s > limit && !(cur.members.is_empty() && cur.notes.is_empty()) {
            flush(&mut cur, &mut size, &mut out);
        }
        size += s;
        cur.notes.push(n);
    }
    if out.is_empty() || !(cur.members.is_empty() && cur.notes.is_empty()) {
        flush(&mut cur, &mut size, &mut out);
    }
    out
}

/// Serialized (postcard) length of a value.
fn encoded_len<T: Serialize>(value: &T) -> usize {
    postcard::to_allocvec(value).map(|v| v.len()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::identity::MemberInfo;

    #[test]
    fn chunks_fit_and_keep_everything() {
        let members: Vec<Member<Id>> = (0..40)
            .map(|i| Member::alive(Id::new(MemberInfo::server(&format!("s{i}"), "eu"), 1)))
            .collect();
        let notes: Vec<Note> = (0..40)
            .map(|i| Note::Left {
                name: format!("s{i}.eu"),
                gen: 1,
            })
            .collect();
        let chunks = sync_chunks(true, members, notes, 1000);
        assert!(chunks.len() > 1);
        let mut n_members = 0;
        let mut n_notes = 0;
        for (i, c) in chunks.iter().enumerate() {
            assert!(c.len() <= 1000, "chunk of {} bytes", c.len());
            let s: Sync = postcard::from_bytes(c).unwrap();
            assert_eq!(s.reply, i == 0);
            n_members += s.members.len();
            n_notes += s.notes.len();
        }
        assert_eq!((n_members, n_notes), (40, 40));
        assert_eq!(sync_chunks(true, vec![], vec![], 1000).len(), 1);
    }
}
