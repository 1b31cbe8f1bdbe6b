use std::sync::{Arc, Mutex};

use crate::checkpoint::{Checkpoint, CheckpointDamage, Loaded};
use crate::ports::{CheckpointStore, StoreError};

#[derive(Debug, Default)]
struct Inner {
    saved: Option<Vec<u8>>,
    /// Every checkpoint written, oldest first (for rollbacks).
    history: Vec<Vec<u8>>,
    saves: u64,
    fail_next: u32,
    /// Saves that still land before the process "dies" (None: all of them).
    landing: Option<u32>,
    /// What [`MemoryStore::set_aside`] was asked, in order.
    set_aside: Vec<String>,
}

/// A checkpoint store in memory, holding the JSON bytes as a file would. Clones share
/// the content, so a test can "crash" an engine and open a new one on the same store.
/// It can lose its checkpoint, roll it back to any generation written before, or
/// have a byte of it changed, as a disk or an operator would.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore(Arc<Mutex<Inner>>);

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many checkpoints were written.
    pub fn saves(&self) -> u64 {
        self.0.lock().unwrap().saves
    }

    /// The next `n` saves fail (a full disk).
    pub fn fail_next(&self, n: u32) {
        self.0.lock().unwrap().fail_next = n;
    }

    /// The process dies after `n` more saves: later ones are lost (they return
    /// success, as nobody is left to see them) until [`MemoryStore::revive`].
    pub fn die_after(&self, n: u32) {
        self.0.lock().unwrap().landing = Some(n);
    }

    /// A new process uses the store: saves land again.
    pub fn revive(&self) {
        self.0.lock().unwrap().landing = None;
    }

    /// How many checkpoints were written and can be rolled back to.
    pub fn history_len(&self) -> usize {
        self.0.lock().unwrap().history.len()
    }

    /// The checkpoint is gone (the state directory was deleted).
    pub fn lose(&self) {
        self.0.lock().unwrap().saved = None;
    }

    /// The checkpoint becomes the `k`-th ever written (0: the first), as a restored
    /// backup or a disk losing recent writes would leave it.
    pub fn roll_back(&self, k: usize) {
        let mut inner = self.0.lock().unwrap();
        inner.saved = inner.history.get(k).cloned();
    }

    /// The bytes of the current checkpoint, if any.
    pub fn bytes(&self) -> Option<Vec<u8>> {
        self.0.lock().unwrap().saved.clone()
    }

    /// XORs byte `at` (modulo the length) of the current checkpoint with `mask`.
    pub fn corrupt(&self, at: usize, mask: u8) {
        let mut inner = self.0.lock().unwrap();
        if let Some(bytes) = inner.saved.as_mut().filter(|b| !b.is_empty()) {
            let at = at % bytes.len();
            bytes[at] ^= mask;
        }
    }

    /// Replaces the current checkpoint's bytes.
    pub fn set_bytes(&self, bytes: Vec<u8>) {
        self.0.lock().unwrap().saved = Some(bytes);
    }

    /// What the engine asked to set aside, in order.
    pub fn set_aside_calls(&self) -> Vec<String> {
        self.0.lock().unwrap().set_aside.clone()
    }
}

impl CheckpointStore for MemoryStore {
    fn load(&self) -> Result<Option<Checkpoint>, StoreError> {
        let inner = self.0.lock().unwrap();
        match &inner.saved {
            None => Ok(None),
            Some(bytes) => Checkpoint::from_json(bytes)
                .map(Some)
                .map_err(|e| StoreError::new(e.to_string())),
        }
    }

    /// Damage is classified as the file store does: a document cut short is torn,
    /// a changed one corrupt.
    fn load_verified(&self) -> Result<Loaded, StoreError> {
        let inner = self.0.lock().unwrap();
        Ok(match &inner.saved {
            None => Loaded::clean(None),
            Some(bytes) => match Checkpoint::from_json(bytes) {
                Ok(cp) => Loaded::clean(Some(cp)),
                Err(e) => Loaded {
                    checkpoint: None,
                    damage: Some(CheckpointDamage {
                        reason: e.reason(),
                        detail: e.to_string(),
                    }),
                    // A floor for the engine's generations (it writes one per save).
                    generation: inner.saves,
                },
            },
        })
    }

    fn set_aside(&self, why: &str) -> Result<Option<String>, StoreError> {
        let mut inner = self.0.lock().unwrap();
        inner.set_aside.push(why.to_string());
        inner.saved = None;
        Ok(Some("memory".into()))
    }

    fn save(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        let mut inner = self.0.lock().unwrap();
        if inner.fail_next > 0 {
            inner.fail_next -= 1;
            return Err(StoreError::no_space("injected: no space left on device"));
        }
        match &mut inner.landing {
            Some(0) => return Ok(()),
            Some(n) => *n -= 1,
            None => {}
        }
        let bytes = checkpoint.to_json();
        inner.history.push(bytes.clone());
        inner.saved = Some(bytes);
        inner.saves += 1;
        Ok(())
    }
}
