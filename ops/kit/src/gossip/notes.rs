//! Metadata that changes, disseminated as foca custom broadcasts ("notes").
//!
//! Each note is about one member and versioned by `(generation, sequence)`:
//! a member's notes only ever replace older ones, and a note about a newer
//! life of a member (higher generation) replaces every note about an older
//! one. `Left` is final for its generation (sequence `u64::MAX`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use foca::{BroadcastHandler, Invalidates};
use serde::{Deserialize, Serialize};

use super::identity::Id;

/// `(generation, sequence)`.
pub(crate) type Version = (u64, u64);

/// One piece of metadata about one member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Note {
    /// A member's current metadata, authored by the member itself.
    Meta {
        name: String,
        gen: u64,
        seq: u64,
        /// The leader of the member's region as this server sees it.
        leader: Option<String>,
        voter: bool,
    },
    /// The member left gracefully (or was force-left by an operator).
    Left { name: String, gen: u64 },
}

impl Note {
    pub(crate) fn name(&self) -> &str {
        match self {
            Note::Meta { name, .. } | Note::Left { name, .. } => name,
        }
    }

    pub(crate) fn version(&self) -> Version {
        match self {
            Note::Meta { gen, seq, .. } => (*gen, *seq),
            Note::Left { gen, .. } => (*gen, u64::MAX),
        }
    }

    pub(crate) fn key(&self) -> NoteKey {
        NoteKey {
            name: self.name().to_string(),
            version: self.version(),
        }
    }
}

/// What foca keeps to decide which pending broadcasts a new one replaces.
pub(crate) struct NoteKey {
    name: String,
    version: Version,
}

impl Invalidates for NoteKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.name == other.name && self.version >= other.version
    }
}

/// The newest note known about each member, and the notes accepted from the
/// network that the pool has not applied to its view yet.
#[derive(Default)]
pub(crate) struct NoteBook {
    latest: HashMap<String, Note>,
    pub(crate) accepted: Vec<Note>,
}

impl NoteBook {
    /// Record `note` if it is newer than what is known about its member.
    pub(crate) fn offer(&mut self, note: &Note) -> bool {
        let newer = self
            .latest
            .get(note.name())
            .is_none_or(|known| note.version() > known.version());
        if newer {
            self.latest.insert(note.name().to_string(), note.clone());
        }
        newer
    }

    /// Every newest note (for full-state exchanges).
    pub(crate) fn all(&self) -> impl Iterator<Item = &Note> {
        self.latest.values()
    }

    /// Forget members no longer listed.
    pub(crate) fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.latest.retain(|name, _| keep(name));
    }
}

/// Shared between the pool's task and the broadcast handler foca owns.
#[derive(Clone, Default)]
pub(crate) struct SharedBook(Arc<Mutex<NoteBook>>);

impl SharedBook {
    pub(crate) fn lock(&self) -> MutexGuard<'_, NoteBook> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// foca's [`BroadcastHandler`] for notes.
pub(crate) struct NoteHandler {
    pub(crate) book: SharedBook,
}

impl BroadcastHandler<Id> for NoteHandler {
    type Key = NoteKey;
    type Error = postcard::Error;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&Id>,
    ) -> Result<Option<NoteKey>, postcard::Error> {
        let note: Note = postcard::from_bytes(data)?;
        if sender.is_none() {
            // Added locally (`Foca::add_broadcast`): the pool recorded it in
            // the book already and wants it disseminated.
            return Ok(Some(note.key()));
        }
        let mut book = self.book.lock();
        if book.offer(&note) {
            let key = note.key();
            book.accepted.push(note);
            Ok(Some(key))
        } else {
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(gen: u64, seq: u64) -> Note {
        Note::Meta {
            name: "s1.eu".into(),
            gen,
            seq,
            leader: Some("s2.eu".into()),
            voter: true,
        }
    }

    #[test]
    fn newer_versions_win() {
        let mut book = NoteBook::default();
        assert!(book.offer(&meta(1, 1)));
        assert!(!book.offer(&meta(1, 1)), "same version is stale");
        assert!(book.offer(&meta(1, 2)));
        assert!(!book.offer(&meta(1, 1)));
        let left = Note::Left {
            name: "s1.eu".into(),
            gen: 1,
        };
        assert!(book.offer(&left));
        assert!(!book.offer(&meta(1, 99)), "left is final for a generation");
        assert!(book.offer(&meta(2, 1)), "a new life replaces it");
    }

    #[test]
    fn keys_invalidate_older_and_equal_versions_of_the_same_member() {
        assert!(meta(1, 2).key().invalidates(&meta(1, 1).key()));
        assert!(meta(1, 2).key().invalidates(&meta(1, 2).key()));
        assert!(!meta(1, 1).key().invalidates(&meta(1, 2).key()));
        let other = Note::Left {
            name: "s2.eu".into(),
            gen: 9,
        };
        assert!(!other.key().invalidates(&meta(1, 1).key()));
    }
}
