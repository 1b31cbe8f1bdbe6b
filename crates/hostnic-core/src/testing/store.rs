use std::sync::{Arc, Mutex};

use crate::checkpoint::Checkpoint;
use crate::ports::{CheckpointStore, StoreError};

#[derive(Debug, Default)]
struct Inner {
    saved: Option<Vec<u8>>,
    saves: u64,
    fail_next: u32,
    /// Saves that still land before the process "dies" (None: all of them).
    landing: Option<u32>,
}

/// A checkpoint store in memory, holding the JSON bytes as a file would. Clones share
/// the content, so a test can "crash" an engine and open a new one on the same store.
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
}

impl CheckpointStore for MemoryStore {
    fn load(&self) -> Result<Option<Checkpoint>, StoreError> {
        let inner = self.0.lock().unwrap();
        match &inner.saved {
            None => Ok(None),
            Some(bytes) => Checkpoint::from_json(bytes)
                .map(Some)
                .map_err(|e| StoreError {
                    message: e.to_string(),
                }),
        }
    }

    fn save(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        let mut inner = self.0.lock().unwrap();
        if inner.fail_next > 0 {
            inner.fail_next -= 1;
            return Err(StoreError {
                message: "injected: no space left on device".into(),
            });
        }
        match &mut inner.landing {
            Some(0) => return Ok(()),
            Some(n) => *n -= 1,
            None => {}
        }
        inner.saved = Some(checkpoint.to_json());
        inner.saves += 1;
        Ok(())
    }
}
