//! The checkpoint on disk, and atomic file writes.
//!
//! A write goes to a temporary file in the same directory, is `fsync`ed,
//! renamed over the target and the directory is `fsync`ed: after a crash the
//! old or the new content is read, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use hostnic_core::checkpoint::Checkpoint;
use hostnic_core::ports::{CheckpointStore, StoreError};

/// The checkpoint's file name under the state directory.
pub const CHECKPOINT_FILE: &str = "state.json";

/// Writes `bytes` to `path` atomically with file mode `mode`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The checkpoint as `<state dir>/state.json`.
#[derive(Debug, Clone)]
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    /// A store under `state_dir` (created with mode 0700 if missing).
    pub fn new(state_dir: &Path) -> std::io::Result<Self> {
        fs::create_dir_all(state_dir)?;
        Ok(Self {
            path: state_dir.join(CHECKPOINT_FILE),
        })
    }

    /// The checkpoint file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl CheckpointStore for FileStore {
    fn load(&self) -> Result<Option<Checkpoint>, StoreError> {
        match fs::read(&self.path) {
            Ok(bytes) => Checkpoint::from_json(&bytes)
                .map(Some)
                .map_err(|e| StoreError {
                    message: format!("{}: {e}", self.path.display()),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError {
                message: format!("reading {}: {e}", self.path.display()),
            }),
        }
    }

    fn save(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        write_atomic(&self.path, &checkpoint.to_json(), 0o600).map_err(|e| StoreError {
            message: format!("writing {}: {e}", self.path.display()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostnic_core::checkpoint::CHECKPOINT_VERSION;
    use hostnic_core::types::{InstanceId, Timestamp};

    #[test]
    fn save_then_load_round_trips_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path()).unwrap();
        assert_eq!(store.load().unwrap(), None);
        let cp = Checkpoint {
            version: CHECKPOINT_VERSION.into(),
            generation: 7,
            instance: InstanceId::new("i-1"),
            written_at: Timestamp(5),
            nics: vec![],
            attachments: vec![],
        };
        store.save(&cp).unwrap();
        assert_eq!(store.load().unwrap(), Some(cp));
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![CHECKPOINT_FILE.to_string()]);
    }

    #[test]
    fn a_corrupt_checkpoint_is_an_error_not_an_empty_node() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path()).unwrap();
        fs::write(store.path(), b"{not json").unwrap();
        assert!(store.load().is_err());
    }
}
