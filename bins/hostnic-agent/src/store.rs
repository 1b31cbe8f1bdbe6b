//! The checkpoint on disk, and atomic file writes.
//!
//! [`write_atomic`]: a write goes to a temporary file in the same directory, is
//! `fsync`ed, renamed over the target and the directory is `fsync`ed: after a
//! crash the old or the new content is read, never a mix.
//!
//! The checkpoint ([`FileStore`]) is written after every change, and an ADD
//! answers only once its checkpoint is durable, so the write is on every pod's
//! start-up path. An atomic file replacement costs two journal commits of the
//! file system (the new inode, then the rename), ≈0.4 ms on an idle ext4 disk and
//! many milliseconds under load. So the checkpoint is kept as a snapshot plus a
//! journal:
//!
//! - `state.json`: a snapshot, replaced with [`write_atomic`] (pretty JSON, for
//!   operators too). Written by the first save of each agent run and whenever
//!   the journal is full (compaction).
//! - `state.journal`: a file of fixed size, zero-filled once when created. Each
//!   later save appends one record — the whole checkpoint, compact JSON — at the
//!   journal's tail with one `pwrite` and one `fdatasync`. The file's blocks and
//!   size never change, so `fdatasync` flushes only the data (no file-system
//!   journal commit): ≈0.1 ms on the same disk.
//!
//! A record is `magic "HNJ1" | len u32 | base u64 | generation u64 | crc u32 |
//! payload`, integers little-endian, the CRC-32 covering `len`, `base`,
//! `generation` and the payload. `base` names the snapshot the record follows:
//! a 64-bit FNV-1a hash of the snapshot file's bytes (which hold its generation
//! and the millisecond it was written). Loading reads the snapshot, then scans
//! the journal from the start while records are intact, and takes the newest
//! record whose `base` is the snapshot's hash, if newer than the snapshot. Hence:
//! - a record torn by a crash fails its CRC and ends the scan: the previous
//!   record (or the snapshot), which was durable before its save returned, is read;
//! - records of an earlier snapshot left in the journal after a compaction (they
//!   are overwritten, not erased) do not match the `base` and are ignored;
//! - a crash during compaction leaves the old snapshot with its records, or the
//!   new snapshot, both complete;
//! - deleting `state.json` resets the node's state as before: without a snapshot
//!   the journal is ignored.
//!
//! A checkpoint whose content (NICs, attachments) equals the last one written is
//! not written again: the pool loop checkpoints every round, and most rounds
//! change nothing, so an idle node does no disk I/O and an ADD rarely waits
//! behind the pool's write. The generation on disk then lags the engine's, which
//! is harmless: a later write carries a higher one, and after a restart the
//! engine counts on from the generation it read.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, mpsc};

use hostnic_core::checkpoint::Checkpoint;
use hostnic_core::ports::{CheckpointStore, StoreError};
use tokio::sync::oneshot;

/// The checkpoint's file name under the state directory (the snapshot).
pub const CHECKPOINT_FILE: &str = "state.json";

/// The journal's file name under the state directory.
pub const JOURNAL_FILE: &str = "state.journal";

/// The journal's size: room for ≈100 checkpoints of a full node (62 pods) or
/// thousands of a small one between two compactions.
pub const JOURNAL_BYTES: u64 = 4 << 20;

const MAGIC: [u8; 4] = *b"HNJ1";
const HEADER_LEN: usize = 28;

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

/// The checkpoint as `<state dir>/state.json` plus `<state dir>/state.journal`
/// (see the module documentation).
#[derive(Debug, Clone)]
pub struct FileStore {
    path: PathBuf,
    journal_path: PathBuf,
    capacity: u64,
    journal: Arc<Mutex<Journal>>,
    /// The thread that writes background saves, started by the first one; it
    /// ends when the last clone of this store is dropped.
    flusher: Arc<OnceLock<mpsc::Sender<FlushJob>>>,
}

/// A background save and where its result goes.
type FlushJob = (Checkpoint, oneshot::Sender<Result<(), StoreError>>);

/// Where the next record goes, once this run has written its first snapshot.
#[derive(Debug, Default)]
struct Journal {
    /// The open journal and the hash of the snapshot its records follow.
    open: Option<(File, u64)>,
    /// Offset of the next record.
    tail: u64,
    /// The last checkpoint made durable by this run.
    last: Option<Checkpoint>,
}

impl FileStore {
    /// A store under `state_dir` (created if missing).
    pub fn new(state_dir: &Path) -> std::io::Result<Self> {
        Self::with_journal_capacity(state_dir, JOURNAL_BYTES)
    }

    /// A store whose journal holds `capacity` bytes (tests use small ones to
    /// compact often).
    pub fn with_journal_capacity(state_dir: &Path, capacity: u64) -> std::io::Result<Self> {
        fs::create_dir_all(state_dir)?;
        Ok(Self {
            path: state_dir.join(CHECKPOINT_FILE),
            journal_path: state_dir.join(JOURNAL_FILE),
            capacity,
            journal: Arc::new(Mutex::new(Journal::default())),
            flusher: Arc::default(),
        })
    }

    /// Starts the flusher: one thread, whatever the number of ADDs in flight
    /// (a thread per save would also cost an allocator arena per thread).
    fn start_flusher(&self) -> mpsc::Sender<FlushJob> {
        let (jobs, queue) = mpsc::channel::<FlushJob>();
        // Its own copy of the store, without the flusher (no cycle keeps it alive).
        let store = FileStore {
            flusher: Arc::default(),
            ..self.clone()
        };
        let started = std::thread::Builder::new()
            .name("hostnic-flush".into())
            .spawn(move || {
                for (checkpoint, reply) in queue {
                    let _ = reply.send(store.save(&checkpoint));
                }
            });
        if let Err(e) = started {
            // The queue went with the closure: every background save falls back
            // to saving in place.
            tracing::warn!(error = %e, "no checkpoint flusher thread; saving in place");
        }
        jobs
    }

    /// The snapshot file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The journal file.
    pub fn journal_path(&self) -> &Path {
        &self.journal_path
    }

    fn error(&self, what: &str, path: &Path, e: impl std::fmt::Display) -> StoreError {
        StoreError {
            message: format!("{what} {}: {e}", path.display()),
        }
    }

    /// The snapshot and its hash (the `base` of its journal records).
    fn load_snapshot(&self) -> Result<Option<(Checkpoint, u64)>, StoreError> {
        match fs::read(&self.path) {
            Ok(bytes) => Checkpoint::from_json(&bytes)
                .map(|cp| Some((cp, fnv1a(&bytes))))
                .map_err(|e| self.error("reading", &self.path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.error("reading", &self.path, e)),
        }
    }

    /// The newest intact journal record that follows the snapshot with hash
    /// `base` and generation `snapshot`.
    fn newest_record(&self, base: u64, snapshot: u64) -> Result<Option<Checkpoint>, StoreError> {
        let bytes = match fs::read(&self.journal_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.error("reading", &self.journal_path, e)),
        };
        let mut newest: Option<(u64, &[u8])> = None;
        let mut at = 0;
        while let Some(record) = parse_record(&bytes[at..]) {
            at += HEADER_LEN + record.payload.len();
            if record.base == base
                && record.generation > snapshot
                && newest.is_none_or(|(g, _)| record.generation > g)
            {
                newest = Some((record.generation, record.payload));
            }
        }
        match newest {
            None => Ok(None),
            Some((generation, payload)) => {
                let cp = Checkpoint::from_json(payload)
                    .map_err(|e| self.error("journal record in", &self.journal_path, e))?;
                if cp.generation != generation {
                    return Err(self.error(
                        "journal record in",
                        &self.journal_path,
                        format!(
                            "header says generation {generation}, payload {}",
                            cp.generation
                        ),
                    ));
                }
                Ok(Some(cp))
            }
        }
    }

    /// Writes `checkpoint` as the snapshot and starts the journal over after it.
    fn compact(&self, journal: &mut Journal, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        let snapshot = checkpoint.to_json();
        write_atomic(&self.path, &snapshot, 0o600)
            .map_err(|e| self.error("writing", &self.path, e))?;
        let file = match journal.open.take() {
            Some((file, _)) => file,
            None => self
                .open_journal()
                .map_err(|e| self.error("preparing", &self.journal_path, e))?,
        };
        journal.open = Some((file, fnv1a(&snapshot)));
        journal.tail = 0;
        journal.last = Some(checkpoint.clone());
        Ok(())
    }

    /// Opens the journal, creating it zero-filled (atomically) if it is missing
    /// or of another size.
    fn open_journal(&self) -> std::io::Result<File> {
        let fits = fs::metadata(&self.journal_path).is_ok_and(|m| m.len() == self.capacity);
        if !fits {
            let zeros = vec![0u8; usize::try_from(self.capacity).unwrap_or(usize::MAX)];
            write_atomic(&self.journal_path, &zeros, 0o600)?;
        }
        OpenOptions::new().write(true).open(&self.journal_path)
    }
}

/// The same node state (generation and time of writing aside).
fn same_content(a: &Checkpoint, b: &Checkpoint) -> bool {
    a.version == b.version
        && a.instance == b.instance
        && a.nics == b.nics
        && a.attachments == b.attachments
}

/// One intact record at the start of `bytes`, if there is one.
struct Record<'a> {
    base: u64,
    generation: u64,
    payload: &'a [u8],
}

fn parse_record(bytes: &[u8]) -> Option<Record<'_>> {
    let header = bytes.get(..HEADER_LEN)?;
    if header[..4] != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(header[4..8].try_into().ok()?) as usize;
    let base = u64::from_le_bytes(header[8..16].try_into().ok()?);
    let generation = u64::from_le_bytes(header[16..24].try_into().ok()?);
    let crc = u32::from_le_bytes(header[24..28].try_into().ok()?);
    let payload = bytes.get(HEADER_LEN..HEADER_LEN.checked_add(len)?)?;
    (record_crc(&header[4..24], payload) == crc).then_some(Record {
        base,
        generation,
        payload,
    })
}

fn encode_record(base: u64, checkpoint: &Checkpoint) -> Result<Vec<u8>, String> {
    let payload = serde_json::to_vec(checkpoint).map_err(|e| e.to_string())?;
    let len = u32::try_from(payload.len()).map_err(|_| "checkpoint over 4 GiB".to_string())?;
    let mut record = Vec::with_capacity(HEADER_LEN + payload.len());
    record.extend_from_slice(&MAGIC);
    record.extend_from_slice(&len.to_le_bytes());
    record.extend_from_slice(&base.to_le_bytes());
    record.extend_from_slice(&checkpoint.generation.to_le_bytes());
    let crc = record_crc(&record[4..24], &payload);
    record.extend_from_slice(&crc.to_le_bytes());
    record.extend_from_slice(&payload);
    Ok(record)
}

/// 64-bit FNV-1a: names a snapshot in the records that follow it.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn record_crc(header: &[u8], payload: &[u8]) -> u32 {
    !crc32_update(crc32_update(!0, header), payload)
}

/// CRC-32 (IEEE 802.3, reflected), the table built at compile time.
fn crc32_update(mut crc: u32, bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 == 1 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    for &b in bytes {
        crc = TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

impl CheckpointStore for FileStore {
    fn load(&self) -> Result<Option<Checkpoint>, StoreError> {
        let Some((snapshot, base)) = self.load_snapshot()? else {
            return Ok(None);
        };
        Ok(Some(
            self.newest_record(base, snapshot.generation)?
                .unwrap_or(snapshot),
        ))
    }

    fn save(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        let mut journal = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        if journal.last.as_ref().is_some_and(|last| {
            // A background save that lost the race to a newer one is dropped.
            last.generation > checkpoint.generation || same_content(last, checkpoint)
        }) {
            return Ok(());
        }
        journal.last = None;
        let Some((file, base)) = &journal.open else {
            // The first save of this run: a fresh snapshot, the journal after it.
            return self.compact(&mut journal, checkpoint);
        };
        let record = encode_record(*base, checkpoint)
            .map_err(|e| self.error("encoding a record for", &self.journal_path, e))?;
        if journal.tail + record.len() as u64 > self.capacity {
            return self.compact(&mut journal, checkpoint);
        }
        let written = file
            .write_all_at(&record, journal.tail)
            .and_then(|()| file.sync_data());
        match written {
            Ok(()) => {
                journal.tail += record.len() as u64;
                journal.last = Some(checkpoint.clone());
                Ok(())
            }
            Err(e) => {
                // The record may be partly written: start over from a snapshot.
                journal.open = None;
                Err(self.error("appending to", &self.journal_path, e))
            }
        }
    }

    /// The save runs on the store's flusher thread: the caller's tokio worker
    /// goes on with the ADD's plumbing while the record is flushed (a few
    /// hundred µs on a disk). `None` (save in place) when the thread is gone.
    fn save_in_background(
        &self,
        checkpoint: &Checkpoint,
    ) -> Option<futures::future::BoxFuture<'static, Result<(), StoreError>>> {
        let flusher = self.flusher.get_or_init(|| self.start_flusher());
        let (reply, saved) = oneshot::channel();
        flusher.send((checkpoint.clone(), reply)).ok()?;
        Some(Box::pin(async move {
            saved.await.unwrap_or_else(|_| {
                Err(StoreError {
                    message: "the checkpoint flusher stopped before saving".into(),
                })
            })
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostnic_core::checkpoint::CHECKPOINT_VERSION;
    use hostnic_core::types::{InstanceId, Timestamp};

    /// A checkpoint whose content (and size) depends on `generation` and `life`.
    fn cp(generation: u64, life: u64) -> Checkpoint {
        Checkpoint {
            version: CHECKPOINT_VERSION.into(),
            generation,
            instance: InstanceId::new(format!(
                "i-{life}-{}",
                "x".repeat((generation % 37) as usize)
            )),
            written_at: Timestamp(1_000 * life + generation),
            nics: vec![],
            attachments: vec![],
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn save_then_load_round_trips_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path()).unwrap();
        assert_eq!(store.load().unwrap(), None);
        store.save(&cp(7, 0)).unwrap();
        assert_eq!(store.load().unwrap(), Some(cp(7, 0)));
        assert_eq!(names(dir.path()), [JOURNAL_FILE, CHECKPOINT_FILE]);
        assert_eq!(
            fs::metadata(store.journal_path()).unwrap().len(),
            JOURNAL_BYTES
        );
    }

    #[test]
    fn a_corrupt_checkpoint_is_an_error_not_an_empty_node() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path()).unwrap();
        fs::write(store.path(), b"{not json").unwrap();
        assert!(store.load().is_err());
    }

    #[test]
    fn the_first_save_of_a_run_is_a_snapshot_and_later_ones_go_to_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path()).unwrap();
        for g in 1..=50 {
            store.save(&cp(g, 0)).unwrap();
            assert_eq!(store.load().unwrap(), Some(cp(g, 0)), "after saving {g}");
        }
        let snapshot = Checkpoint::from_json(&fs::read(store.path()).unwrap()).unwrap();
        assert_eq!(
            snapshot,
            cp(1, 0),
            "the snapshot is only rewritten on compaction"
        );
        // The next run reads the journal, and its first save compacts.
        let next = FileStore::new(dir.path()).unwrap();
        assert_eq!(next.load().unwrap(), Some(cp(50, 0)));
        next.save(&cp(51, 0)).unwrap();
        let snapshot = Checkpoint::from_json(&fs::read(next.path()).unwrap()).unwrap();
        assert_eq!(snapshot, cp(51, 0));
        for g in 52..=60 {
            next.save(&cp(g, 0)).unwrap();
        }
        assert_eq!(
            FileStore::new(dir.path()).unwrap().load().unwrap(),
            Some(cp(60, 0))
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_background_save_is_durable_when_it_completes_and_never_replaces_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path()).unwrap();
        let in_background = |store: &FileStore, c: Checkpoint| {
            store
                .save_in_background(&c)
                .expect("the flusher thread takes it")
        };
        let reloaded = || FileStore::new(dir.path()).unwrap().load().unwrap();
        store.save(&cp(1, 0)).unwrap();
        in_background(&store, cp(2, 0)).await.unwrap();
        assert_eq!(reloaded(), Some(cp(2, 0)));
        // An older generation that lost the race to a newer save is dropped.
        store.save(&cp(5, 0)).unwrap();
        in_background(&store, cp(4, 0)).await.unwrap();
        assert_eq!(reloaded(), Some(cp(5, 0)));
        // One flusher thread serves every clone, and ends with the last one.
        let clone = store.clone();
        in_background(&clone, cp(6, 0)).await.unwrap();
        assert_eq!(reloaded(), Some(cp(6, 0)));
        let flusher = Arc::downgrade(&store.flusher);
        drop((store, clone));
        assert!(flusher.upgrade().is_none(), "the flusher's queue is closed");
    }

    #[test]
    fn a_checkpoint_that_changes_nothing_is_not_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path()).unwrap();
        store.save(&cp(1, 0)).unwrap();
        store.save(&cp(2, 0)).unwrap();
        let journal = fs::read(store.journal_path()).unwrap();
        // Generation 3 with the content of 2, written later: nothing to write.
        let mut same = cp(2, 0);
        same.generation = 3;
        same.written_at = Timestamp(99_999);
        store.save(&same).unwrap();
        assert_eq!(fs::read(store.journal_path()).unwrap(), journal);
        assert_eq!(store.load().unwrap(), Some(cp(2, 0)));
        // A change is written, with its generation.
        store.save(&cp(4, 0)).unwrap();
        assert_eq!(store.load().unwrap(), Some(cp(4, 0)));
        // A new run writes its first checkpoint whatever it holds.
        let next = FileStore::new(dir.path()).unwrap();
        let mut again = cp(4, 0);
        again.generation = 5;
        next.save(&again).unwrap();
        assert_eq!(next.load().unwrap(), Some(again));
    }

    #[test]
    fn a_full_journal_is_compacted_and_its_old_records_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        // Room for a handful of records: compaction every few saves.
        let store = FileStore::with_journal_capacity(dir.path(), 1024).unwrap();
        for g in 1..=300 {
            store.save(&cp(g, 0)).unwrap();
            let reread = FileStore::with_journal_capacity(dir.path(), 1024).unwrap();
            assert_eq!(reread.load().unwrap(), Some(cp(g, 0)), "after saving {g}");
        }
        assert_eq!(fs::metadata(store.journal_path()).unwrap().len(), 1024);
    }

    #[test]
    fn deleting_the_snapshot_resets_the_state_even_with_records_left_in_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let first = FileStore::new(dir.path()).unwrap();
        for g in 1..=30 {
            first.save(&cp(g, 1)).unwrap();
        }
        fs::remove_file(first.path()).unwrap();
        let second = FileStore::new(dir.path()).unwrap();
        assert_eq!(second.load().unwrap(), None, "no snapshot: a fresh node");
        // A new life counts generations from 1 again; the old life's records (up
        // to 30, some with the same generations) must not come back.
        second.save(&cp(1, 2)).unwrap();
        second.save(&cp(2, 2)).unwrap();
        assert_eq!(
            FileStore::new(dir.path()).unwrap().load().unwrap(),
            Some(cp(2, 2))
        );
    }

    /// Crash safety of an append: whatever prefix of the last record reached the
    /// disk (a crash during `pwrite`/`fdatasync`, before the save returned), and
    /// whatever bytes follow it (zeros, or an older record's), loading gives the
    /// checkpoint before it, never an error or a mix; a flipped bit in the record
    /// likewise. The next run then continues from there.
    #[test]
    fn a_torn_or_corrupted_last_record_reads_as_the_checkpoint_before_it() {
        let dir = tempfile::tempdir().unwrap();
        // A small journal, so the hundreds of images below are cheap to write.
        let store = FileStore::with_journal_capacity(dir.path(), 8 << 10).unwrap();
        for g in 1..=5 {
            store.save(&cp(g, 0)).unwrap();
        }
        let journal = fs::read(store.journal_path()).unwrap();
        // Records 2..=5 are at the journal's start.
        let mut offsets = vec![0usize];
        while let Some(r) = parse_record(&journal[*offsets.last().unwrap()..]) {
            offsets.push(offsets.last().unwrap() + HEADER_LEN + r.payload.len());
        }
        assert_eq!(offsets.len(), 5, "four records after the snapshot");
        let (start, end) = (offsets[3], offsets[4]);
        let garbage: Vec<u8> = journal[..end - start].to_vec(); // an older record's bytes
        for tail in [vec![0u8; end - start], garbage] {
            for cut in 0..(end - start) {
                let mut image = journal.clone();
                image[start + cut..end].copy_from_slice(&tail[cut..]);
                fs::write(store.journal_path(), &image).unwrap();
                let loaded = FileStore::with_journal_capacity(dir.path(), 8 << 10)
                    .unwrap()
                    .load()
                    .unwrap();
                assert_eq!(loaded, Some(cp(4, 0)), "record 5 torn after {cut} bytes");
            }
        }
        for at in (start..end).step_by(7) {
            let mut image = journal.clone();
            image[at] ^= 0x10;
            fs::write(store.journal_path(), &image).unwrap();
            let loaded = FileStore::with_journal_capacity(dir.path(), 8 << 10)
                .unwrap()
                .load()
                .unwrap();
            assert_eq!(loaded, Some(cp(4, 0)), "bit flipped at byte {}", at - start);
        }
        let next = FileStore::with_journal_capacity(dir.path(), 8 << 10).unwrap();
        assert_eq!(next.load().unwrap(), Some(cp(4, 0)));
        next.save(&cp(5, 3)).unwrap();
        next.save(&cp(6, 3)).unwrap();
        assert_eq!(
            FileStore::with_journal_capacity(dir.path(), 8 << 10)
                .unwrap()
                .load()
                .unwrap(),
            Some(cp(6, 3))
        );
    }

    /// A process killed (`SIGKILL`) at random moments while saving: every save that
    /// returned is found by the next load (it may find a newer one whose save was
    /// under way), and what is found is exactly a checkpoint that was saved. The
    /// test runs itself as the child (`HOSTNIC_STORE_CRASH_DIR` set), which saves
    /// in a loop and prints each generation once its save returned.
    #[test]
    fn a_process_killed_while_saving_loses_no_acknowledged_checkpoint() {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};

        const CHILD: &str = "HOSTNIC_STORE_CRASH_DIR";
        if let Some(dir) = std::env::var_os(CHILD) {
            let store = FileStore::with_journal_capacity(Path::new(&dir), 16 << 10).unwrap();
            let start = store.load().unwrap().map_or(0, |c| c.generation);
            let life = start; // distinct content per life
            let mut out = std::io::stdout().lock();
            for g in start + 1.. {
                store.save(&cp(g, life)).unwrap();
                writeln!(out, "{g} {life}").unwrap();
                out.flush().unwrap();
            }
            return;
        }
        /// The child is killed even if an assertion fails first.
        struct KillOnDrop(std::process::Child);
        impl Drop for KillOnDrop {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let exe = std::env::current_exe().unwrap();
        let mut acked: Option<(u64, u64)> = None;
        for round in 0..12u64 {
            let mut child = KillOnDrop(Command::new(&exe)
                .args([
                    "--exact",
                    "store::tests::a_process_killed_while_saving_loses_no_acknowledged_checkpoint",
                    "--nocapture",
                    "--test-threads",
                    "1",
                ])
                .env(CHILD, dir.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap());
            let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
            // Let it save a varying number of times, then kill it mid-loop.
            let wanted = 20 + round * 37 % 200;
            let mut seen = 0;
            while seen < wanted {
                let line = lines.next().expect("the child stopped saving").unwrap();
                let mut words = line.split_whitespace().map(|w| w.parse::<u64>());
                if let (Some(Ok(g)), Some(Ok(life))) = (words.next(), words.next()) {
                    acked = Some((g, life));
                    seen += 1;
                }
            }
            child.0.kill().unwrap();
            // Lines already written before the kill are acknowledged saves too.
            for line in lines.map_while(Result::ok) {
                let mut words = line.split_whitespace().map(|w| w.parse::<u64>());
                if let (Some(Ok(g)), Some(Ok(life))) = (words.next(), words.next()) {
                    acked = Some((g, life));
                }
            }
            let _ = child.0.wait();
            let (g, life) = acked.unwrap();
            let loaded = FileStore::with_journal_capacity(dir.path(), 16 << 10)
                .unwrap()
                .load()
                .unwrap()
                .expect("a checkpoint after acknowledged saves");
            assert!(
                loaded == cp(g, life) || loaded == cp(g + 1, life),
                "round {round}: acknowledged {g}, loaded {loaded:?}"
            );
            acked = Some((loaded.generation, life));
        }
    }
}
