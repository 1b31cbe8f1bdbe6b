//! # hostnic-store
//!
//! The node agent's files: its checkpoint on disk (the core's `CheckpointStore`
//! port), atomic file writes, the pending DELs the plugin leaves ([`pending`]),
//! the CNI configuration and plugin install ([`cni`]) and the fingerprints of the
//! files it read at start ([`fingerprint`]). An adapter like the others: it
//! depends on `hostnic-core` only.
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
//! - `state.json`: a snapshot, replaced with [`write_atomic`] (pretty JSON with its
//!   CRC-32, for operators too). Written when the journal is full (compaction) and
//!   by the first save of a run whose start found anything wrong.
//! - `state.journal`: a file of fixed size, zero-filled once when created. Each
//!   save appends one record — the whole checkpoint, compact JSON — at the
//!   journal's tail with one `pwrite` and one `fdatasync`. The file's blocks and
//!   size never change, so `fdatasync` flushes only the data (no file-system
//!   journal commit): ≈0.1 ms on the same disk.
//!
//! A record is `magic "HNJ1" | len u32 | base u64 | generation u64 | crc u32 |
//! payload`, integers little-endian, the CRC-32 (`crc32fast`) covering `len`,
//! `base`, `generation` and the payload. `base` names the snapshot the record
//! follows: a 64-bit FNV-1a hash of the snapshot file's bytes (which hold its
//! generation and the millisecond it was written). Loading reads the snapshot,
//! then the journal's records from the start while they are intact and follow
//! the snapshot, and takes the newest. Hence:
//! - a record torn by a crash fails its CRC and ends the scan: the previous
//!   record (or the snapshot), which was durable before its save returned, is read,
//!   and the run appends after it (its first save needs no new disk space);
//! - a damaged record *before* newer records of the same snapshot is corruption,
//!   not a crash: the rest of the journal is searched for intact records (each is
//!   the whole checkpoint), the newest is used, the damage is reported and the
//!   journal copied aside (`state.journal.corrupt-<ms>`);
//! - records of an earlier snapshot left in the journal after a compaction (they
//!   are overwritten, not erased) do not match the `base` and are ignored;
//! - a crash during compaction leaves the old snapshot with its records, or the
//!   new snapshot, both complete;
//! - a snapshot that is torn or corrupt is renamed aside
//!   (`state.json.torn-<ms>`, `.corrupt-<ms>`) and the newest intact record of the
//!   journal is used; a missing snapshot likewise. Either way the engine rebuilds
//!   what the checkpoint lacks from the host, the pod source and the cloud
//!   (`hostnic_core::recovery`), and reports it.
//!
//! A checkpoint whose content (NICs, attachments) equals the last one written is
//! not written again: the pool loop checkpoints every round, and most rounds
//! change nothing, so an idle node does no disk I/O and an ADD rarely waits
//! behind the pool's write. The generation on disk then lags the engine's, which
//! is harmless: a later write carries a higher one, and after a restart the
//! engine counts on from the highest generation the store saw.
//!
//! Disk space: the journal is preallocated from the free space when it is created
//! ([`journal_capacity`]: a quarter of it, at most [`JOURNAL_BYTES`], at least
//! [`MIN_JOURNAL_BYTES`]); with less free space the store runs without a journal,
//! every save replacing the snapshot. An existing journal is used at its size. A
//! start resumes the journal, so it writes nothing new. When the journal is full
//! and the disk has no room for a snapshot, the journal goes round from its start
//! (the newest generation wins a load; a torn write leaves the newest intact record
//! further on): a full disk stops nothing while the journal exists. Without one, a
//! full disk fails a save with [`StoreErrorKind::NoSpace`], which names the disk.

pub mod cni;
mod fingerprint;
pub mod pending;

pub use fingerprint::fingerprint;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, mpsc};

use hostnic_core::checkpoint::{Checkpoint, CheckpointDamage, Loaded, RecoveryReason};
use hostnic_core::ports::{CheckpointStore, StoreError, StoreErrorKind};
use tokio::sync::oneshot;

/// The checkpoint's file name under the state directory (the snapshot).
pub const CHECKPOINT_FILE: &str = "state.json";

/// The journal's file name under the state directory.
pub const JOURNAL_FILE: &str = "state.journal";

/// The journal's largest size: room for ≈100 checkpoints of a full node (62 pods)
/// or thousands of a small one between two compactions.
pub const JOURNAL_BYTES: u64 = 4 << 20;

/// The journal's smallest size (a few checkpoints of a small node); with less free
/// space than four times this, the store runs without a journal.
pub const MIN_JOURNAL_BYTES: u64 = 16 << 10;

const MAGIC: [u8; 4] = *b"HNJ1";

/// The format number of a checkpoint version (`hostnic/1` → 1).
fn format_number(version: &str) -> Option<u32> {
    version.strip_prefix("hostnic/")?.parse().ok()
}

/// The `version` a snapshot claims, read leniently (the document may be damaged:
/// damage is the recovery's business, not this check's).
fn claimed_version(bytes: &[u8]) -> Option<String> {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) {
        return v.get("version")?.as_str().map(str::to_string);
    }
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]).into_owned();
    let after = head.split_once("\"version\"")?.1;
    let value = after
        .trim_start()
        .strip_prefix(':')?
        .trim_start()
        .strip_prefix('"')?;
    Some(value.split('"').next()?.to_string())
}

/// A checkpoint of a newer hostnic found in a state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewerCheckpoint {
    /// The file that says so (`state.json` or `state.journal`).
    pub path: PathBuf,
    /// The format it claims (`hostnic/2`, or `journal HNJ2`).
    pub format: String,
}

impl std::fmt::Display for NewerCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} was written by a newer hostnic (format {}); this one reads {}",
            self.path.display(),
            self.format,
            hostnic_core::checkpoint::CHECKPOINT_VERSION
        )
    }
}

/// A checkpoint in `state_dir` written by a newer hostnic: a higher `hostnic/N` in
/// `state.json`, or a newer journal magic `HNJ<n>`.
///
/// A damaged or lost checkpoint is rebuilt from the node's witnesses
/// (`hostnic_core::recovery`), but a *newer* one is not damage: it may record
/// what this version cannot see (another mode's addresses, say), and rebuilding
/// over it could cut pods off or give their addresses away. The agent refuses
/// to start on it (docs/upgrade.md). Damage (a document that names no version)
/// is not reported here.
pub fn newer_checkpoint(state_dir: &Path) -> Option<NewerCheckpoint> {
    let ours = format_number(hostnic_core::checkpoint::CHECKPOINT_VERSION).unwrap_or(1);
    let snapshot = state_dir.join(CHECKPOINT_FILE);
    if let Ok(bytes) = fs::read(&snapshot)
        && let Some(version) = claimed_version(&bytes)
        && format_number(&version).is_some_and(|n| n > ours)
    {
        return Some(NewerCheckpoint {
            path: snapshot,
            format: version,
        });
    }
    let journal = state_dir.join(JOURNAL_FILE);
    let mut file = File::open(&journal).ok()?;
    let mut magic = [0u8; 4];
    std::io::Read::read_exact(&mut file, &mut magic).ok()?;
    (magic[..3] == MAGIC[..3] && magic[3].is_ascii_digit() && magic[3] > MAGIC[3]).then(|| {
        NewerCheckpoint {
            path: journal,
            format: format!("journal {}", String::from_utf8_lossy(&magic)),
        }
    })
}
const HEADER_LEN: usize = 28;

/// The journal's size when `available` bytes are free where it is created: a
/// quarter of them (the snapshot, its temporary copy and the pending DELs need
/// room too), at most [`JOURNAL_BYTES`], rounded down to 4 KiB; `None` below
/// [`MIN_JOURNAL_BYTES`].
pub fn journal_capacity(available: u64) -> Option<u64> {
    let capacity = (available / 4).min(JOURNAL_BYTES) & !4095;
    (capacity >= MIN_JOURNAL_BYTES).then_some(capacity)
}

/// Creates `dir` with mode 0700 (missing parents as usual), and takes group and
/// other access away from an existing one (an earlier agent made it 0755): the
/// checkpoint and the pending DELs name every pod of the node with its address.
/// Its files are written 0600.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent)?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let mode = fs::metadata(dir)?.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode & 0o700))?;
        tracing::info!(dir = %dir.display(), was = format!("{mode:o}"), "state directory made private (0700)");
    }
    Ok(())
}

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
    dir: PathBuf,
    path: PathBuf,
    journal_path: PathBuf,
    /// The journal's size when the store creates it; `None`: from the free space.
    fixed_capacity: Option<u64>,
    journal: Arc<Mutex<Journal>>,
    /// The thread that writes background saves, started by the first one; it
    /// ends when the last clone of this store is dropped.
    flusher: Arc<OnceLock<mpsc::Sender<FlushJob>>>,
}

/// A background save and where its result goes.
type FlushJob = (Checkpoint, oneshot::Sender<Result<(), StoreError>>);

/// Where the next record goes.
#[derive(Debug, Default)]
struct Journal {
    /// The open journal and the hash of the snapshot its records follow.
    open: Option<OpenJournal>,
    /// Offset of the next record.
    tail: u64,
    /// The last checkpoint made durable by this run.
    last: Option<Checkpoint>,
    /// Where a clean load left the journal: the run's first save appends there.
    resume: Option<Resume>,
    /// The journal could not be created (too little free space): saves replace the
    /// snapshot. Logged once.
    without_journal: bool,
    /// The journal went round for lack of room for a snapshot. Logged once.
    wrapping: bool,
}

#[derive(Debug)]
struct OpenJournal {
    file: File,
    base: u64,
    capacity: u64,
}

/// The end of the records a clean load found.
#[derive(Debug)]
struct Resume {
    base: u64,
    tail: u64,
    last: Checkpoint,
}

impl FileStore {
    /// A store under `state_dir` (created if missing), its journal sized from the
    /// free space ([`journal_capacity`]).
    pub fn new(state_dir: &Path) -> std::io::Result<Self> {
        Self::build(state_dir, None)
    }

    /// A store whose journal holds `capacity` bytes (tests use small ones to
    /// compact often).
    pub fn with_journal_capacity(state_dir: &Path, capacity: u64) -> std::io::Result<Self> {
        Self::build(state_dir, Some(capacity))
    }

    fn build(state_dir: &Path, fixed_capacity: Option<u64>) -> std::io::Result<Self> {
        create_private_dir(state_dir)?;
        Ok(Self {
            dir: state_dir.to_path_buf(),
            path: state_dir.join(CHECKPOINT_FILE),
            journal_path: state_dir.join(JOURNAL_FILE),
            fixed_capacity,
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

    /// A store error about `path`; a full disk (`ENOSPC`, `EDQUOT`) says so.
    fn error(&self, what: &str, path: &Path, e: impl std::fmt::Display) -> StoreError {
        StoreError::new(format!("{what} {}: {e}", path.display()))
    }

    fn io_error(&self, what: &str, path: &Path, e: &std::io::Error) -> StoreError {
        let mut err = self.error(what, path, e);
        if matches!(
            e.raw_os_error(),
            Some(nix::libc::ENOSPC | nix::libc::EDQUOT)
        ) {
            err.kind = StoreErrorKind::NoSpace;
        }
        err
    }

    /// Free bytes for an unprivileged writer on the state directory's file system.
    fn available(&self) -> std::io::Result<u64> {
        let stat = nix::sys::statvfs::statvfs(&self.dir).map_err(std::io::Error::from)?;
        #[allow(clippy::useless_conversion)] // the field types differ between libcs
        let (blocks, size) = (
            u64::from(stat.blocks_available()),
            u64::from(stat.fragment_size()),
        );
        Ok(blocks.saturating_mul(size))
    }

    /// Keeps `path` for inspection as `<name>.<label>-<ms>`: renamed, or copied when
    /// `copy` (the journal stays usable in place). Returns the new name.
    fn keep_aside(&self, path: &Path, label: &str, copy: bool) -> Result<PathBuf, String> {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let kept = path.with_file_name(format!("{name}.{label}-{ms}"));
        let done = if copy {
            fs::copy(path, &kept).map(|_| ())
        } else {
            fs::rename(path, &kept)
        };
        match done {
            Ok(()) => Ok(kept),
            Err(e) => {
                if copy {
                    let _ = fs::remove_file(&kept);
                }
                Err(e.to_string())
            }
        }
    }

    /// Opens the journal, creating it zero-filled (atomically) when it is missing,
    /// too small, or not of the fixed size. Returns the file and its size.
    fn open_journal(&self) -> Result<(File, u64), StoreError> {
        let size = fs::metadata(&self.journal_path).map(|m| m.len()).ok();
        let usable = match (size, self.fixed_capacity) {
            (Some(size), Some(fixed)) => size == fixed,
            (Some(size), None) => size >= MIN_JOURNAL_BYTES,
            (None, _) => false,
        };
        let capacity = match (size, self.fixed_capacity) {
            (Some(size), _) if usable => size,
            (_, Some(fixed)) => fixed,
            (size, None) => {
                let free = self
                    .available()
                    .map_err(|e| self.io_error("measuring the free space of", &self.dir, &e))?
                    .saturating_add(size.unwrap_or(0));
                journal_capacity(free).ok_or_else(|| {
                    StoreError::no_space(format!(
                        "{} has {} KiB free: below the {} KiB a journal needs",
                        self.dir.display(),
                        free / 1024,
                        4 * MIN_JOURNAL_BYTES / 1024
                    ))
                })?
            }
        };
        if !usable {
            let zeros = vec![0u8; usize::try_from(capacity).unwrap_or(usize::MAX)];
            write_atomic(&self.journal_path, &zeros, 0o600)
                .map_err(|e| self.io_error("preparing", &self.journal_path, &e))?;
        }
        let file = OpenOptions::new()
            .write(true)
            .open(&self.journal_path)
            .map_err(|e| self.io_error("opening", &self.journal_path, &e))?;
        Ok((file, capacity))
    }

    /// Writes `checkpoint` as the snapshot and starts the journal over after it. When
    /// the journal cannot be had (too little space), the snapshot alone holds it.
    fn compact(&self, journal: &mut Journal, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        let snapshot = checkpoint.to_json();
        write_atomic(&self.path, &snapshot, 0o600)
            .map_err(|e| self.io_error("writing", &self.path, &e))?;
        journal.last = Some(checkpoint.clone());
        let (file, capacity) = match journal.open.take() {
            Some(open) => (open.file, open.capacity),
            None => match self.open_journal() {
                Ok(opened) => {
                    journal.without_journal = false;
                    opened
                }
                Err(e) => {
                    if !journal.without_journal {
                        tracing::warn!(error = %e, "no checkpoint journal: every save replaces state.json (slower ADDs)");
                        journal.without_journal = true;
                    }
                    return Ok(());
                }
            },
        };
        journal.open = Some(OpenJournal {
            file,
            base: fnv1a(&snapshot),
            capacity,
        });
        journal.tail = 0;
        journal.resume = None;
        journal.wrapping = false;
        Ok(())
    }

    /// Reopens the journal where a clean load left it, if it did.
    fn resume(&self, journal: &mut Journal) {
        if journal.open.is_some() {
            return;
        }
        let Some(resume) = journal.resume.take() else {
            return;
        };
        let opened = OpenOptions::new()
            .write(true)
            .open(&self.journal_path)
            .and_then(|f| Ok((f.metadata()?.len(), f)));
        if let Ok((capacity, file)) = opened {
            journal.open = Some(OpenJournal {
                file,
                base: resume.base,
                capacity,
            });
            journal.tail = resume.tail;
            journal.last = Some(resume.last);
        }
    }

    /// [`CheckpointStore::load_verified`]: the snapshot, the journal, and what is wrong.
    fn load_files(&self) -> Loaded {
        let mut damage: Vec<(RecoveryReason, String)> = Vec::new();
        let snapshot = match fs::read(&self.path) {
            Ok(bytes) => match Checkpoint::from_json(&bytes) {
                Ok(cp) => Some((cp, fnv1a(&bytes))),
                Err(e) => {
                    let label = match e.reason() {
                        RecoveryReason::Torn => "torn",
                        _ => "corrupt",
                    };
                    let kept = match self.keep_aside(&self.path, label, false) {
                        Ok(kept) => format!("kept as {}", kept.display()),
                        Err(err) => format!("could not be kept aside: {err}"),
                    };
                    damage.push((e.reason(), format!("{}: {e}; {kept}", self.path.display())));
                    None
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                damage.push((
                    RecoveryReason::Unreadable,
                    format!("reading {}: {e}", self.path.display()),
                ));
                None
            }
        };
        let bytes = match fs::read(&self.journal_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                damage.push((
                    RecoveryReason::Unreadable,
                    format!("reading {}: {e}", self.journal_path.display()),
                ));
                Vec::new()
            }
        };
        let scan = scan_journal(&bytes);
        let mut generation = scan.records.iter().map(|r| r.generation).max().unwrap_or(0);
        let checkpoint = match &snapshot {
            Some((snap, base)) => {
                generation = generation.max(snap.generation);
                let base = *base;
                // This snapshot's records: the chain from the start, up to the first
                // record that is damaged or follows another snapshot.
                let ours = scan
                    .records
                    .iter()
                    .take_while(|r| r.chained && r.base == base);
                let chain: Vec<&Record> = ours.collect();
                let chain_end = chain.last().map_or(0, |r| r.offset + r.len);
                let chain_max = chain.iter().map(|r| r.generation).max().unwrap_or(0);
                let stray = scan
                    .records
                    .iter()
                    .filter(|r| !r.chained && r.base == base && r.generation > chain_max)
                    .count();
                // A torn record, or an older snapshot's record partly overwritten,
                // leaves at most about a record's length of stray bytes after the chain.
                let largest = scan.records.iter().map(|r| r.len).max().unwrap_or(0);
                let allowed = 2 * largest.max(snap_len(&snapshot)).max(4096);
                let garbage = scan.garbage_after(&bytes, chain_end);
                let problem = if stray > 0 {
                    Some(format!(
                        "the record at offset {chain_end} is damaged and {stray} newer records \
                         follow it; the newest intact one is used"
                    ))
                } else if garbage > allowed {
                    Some(format!(
                        "{garbage} bytes after the last intact record (offset {chain_end}) are \
                         neither zeros nor records"
                    ))
                } else {
                    None
                };
                if let Some(problem) = problem {
                    // Not a crash's torn tail: the journal's bytes changed.
                    let kept = match self.keep_aside(&self.journal_path, "corrupt", true) {
                        Ok(kept) => format!("copied to {}", kept.display()),
                        Err(err) => format!("could not be copied aside: {err}"),
                    };
                    damage.push((
                        RecoveryReason::Corrupt,
                        format!("{}: {problem}; {kept}", self.journal_path.display()),
                    ));
                    Some(self.newest(&bytes, scan.records.iter().filter(|r| r.base == base), snap))
                } else {
                    let cp = self.newest(&bytes, chain.iter().copied(), snap);
                    let mut journal = self.journal.lock().unwrap_or_else(|p| p.into_inner());
                    // Only a run that has not written yet resumes where the load left off.
                    if damage.is_empty() && journal.open.is_none() && journal.last.is_none() {
                        journal.resume = Some(Resume {
                            base,
                            tail: chain_end as u64,
                            last: cp.clone(),
                        });
                    }
                    Some(cp)
                }
            }
            None => {
                // No usable snapshot: the newest intact record, whatever it follows.
                let newest = scan.records.iter().max_by_key(|r| r.generation);
                let cp = newest.and_then(|r| Checkpoint::from_json(&bytes[r.payload()]).ok());
                if damage.is_empty() && cp.is_some() {
                    damage.push((
                        RecoveryReason::Missing,
                        format!(
                            "{} is missing; the newest record of {} is used",
                            self.path.display(),
                            self.journal_path.display()
                        ),
                    ));
                } else if let Some(cp) = &cp
                    && let Some(last) = damage.last_mut()
                {
                    last.1.push_str(&format!(
                        "; the journal's newest record (generation {}) is used",
                        cp.generation
                    ));
                }
                cp
            }
        };
        let damage = (!damage.is_empty()).then(|| CheckpointDamage {
            reason: damage[0].0,
            detail: damage
                .iter()
                .map(|(_, d)| d.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        });
        Loaded {
            checkpoint,
            damage,
            generation,
        }
    }

    /// The newest of `records` newer than `snapshot`, or the snapshot. A record's
    /// payload is CRC-checked already; one that does not parse is skipped.
    fn newest<'r>(
        &self,
        bytes: &[u8],
        records: impl Iterator<Item = &'r Record>,
        snapshot: &Checkpoint,
    ) -> Checkpoint {
        let mut records: Vec<&Record> = records
            .filter(|r| r.generation > snapshot.generation)
            .collect();
        records.sort_by_key(|r| std::cmp::Reverse(r.generation));
        records
            .into_iter()
            .find_map(|r| {
                Checkpoint::from_json(&bytes[r.payload()])
                    .ok()
                    .filter(|cp| cp.generation == r.generation)
            })
            .unwrap_or_else(|| snapshot.clone())
    }
}

/// The same node state (generation and time of writing aside).
fn same_content(a: &Checkpoint, b: &Checkpoint) -> bool {
    a.version == b.version
        && a.instance == b.instance
        && a.nics == b.nics
        && a.attachments == b.attachments
}

/// One intact record of the journal.
#[derive(Debug)]
struct Record {
    offset: usize,
    len: usize,
    base: u64,
    generation: u64,
    /// Part of the chain of records from the journal's start.
    chained: bool,
}

impl Record {
    fn payload(&self) -> std::ops::Range<usize> {
        self.offset + HEADER_LEN..self.offset + self.len
    }
}

struct Scan {
    /// Every intact record: the chain from the start first, then those found after
    /// the chain's end, in order.
    records: Vec<Record>,
}

impl Scan {
    /// Non-zero bytes from `from` on that no intact record covers.
    fn garbage_after(&self, bytes: &[u8], from: usize) -> usize {
        let mut count = 0;
        let mut at = from;
        for r in self.records.iter().filter(|r| r.offset >= from) {
            count += nonzero(bytes.get(at..r.offset).unwrap_or_default());
            at = r.offset + r.len;
        }
        count + nonzero(bytes.get(at..).unwrap_or_default())
    }
}

fn nonzero(bytes: &[u8]) -> usize {
    bytes.iter().filter(|b| **b != 0).count()
}

/// The length of the snapshot's JSON, an estimate of a record's.
fn snap_len(snapshot: &Option<(Checkpoint, u64)>) -> usize {
    snapshot
        .as_ref()
        .map_or(0, |(cp, _)| serde_json::to_vec(cp).map_or(0, |v| v.len()))
}

/// Finds the intact records of a journal: the chain from offset 0 while records
/// follow each other, then, after the first gap (zeros, a torn or damaged record),
/// any intact record further on.
fn scan_journal(bytes: &[u8]) -> Scan {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some(r) = parse_record(bytes, at, true) {
        at += r.len;
        records.push(r);
    }
    let mut from = at + 1;
    while let Some(found) = bytes
        .get(from..)
        .and_then(|rest| rest.windows(MAGIC.len()).position(|w| w == MAGIC))
    {
        let offset = from + found;
        match parse_record(bytes, offset, false) {
            Some(r) => {
                from = offset + r.len;
                records.push(r);
            }
            None => from = offset + 1,
        }
    }
    Scan { records }
}

/// The intact record at `offset`, if there is one.
fn parse_record(bytes: &[u8], offset: usize, chained: bool) -> Option<Record> {
    let header = bytes.get(offset..offset.checked_add(HEADER_LEN)?)?;
    if header[..4] != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(header[4..8].try_into().ok()?) as usize;
    let base = u64::from_le_bytes(header[8..16].try_into().ok()?);
    let generation = u64::from_le_bytes(header[16..24].try_into().ok()?);
    let crc = u32::from_le_bytes(header[24..28].try_into().ok()?);
    let start = offset + HEADER_LEN;
    let payload = bytes.get(start..start.checked_add(len)?)?;
    (record_crc(&header[4..24], payload) == crc).then_some(Record {
        offset,
        len: HEADER_LEN + len,
        base,
        generation,
        chained,
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

/// 64-bit FNV-1a (the `fnv` crate): names a snapshot in the records that follow
/// it. Part of the on-disk format: journals written by earlier agents use it too.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    use std::hash::Hasher as _;
    let mut hasher = fnv::FnvHasher::default();
    hasher.write(bytes);
    hasher.finish()
}

/// CRC-32 (IEEE 802.3) of a record's header fields and payload.
fn record_crc(header: &[u8], payload: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(header);
    crc.update(payload);
    crc.finalize()
}

impl CheckpointStore for FileStore {
    fn load(&self) -> Result<Option<Checkpoint>, StoreError> {
        Ok(self.load_files().checkpoint)
    }

    fn load_verified(&self) -> Result<Loaded, StoreError> {
        Ok(self.load_files())
    }

    /// Renames the snapshot and the journal aside (`.unusable-<ms>`); the next save
    /// starts both afresh.
    fn set_aside(&self, why: &str) -> Result<Option<String>, StoreError> {
        let mut journal = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        journal.open = None;
        journal.resume = None;
        journal.last = None;
        let mut kept = Vec::new();
        for path in [&self.path, &self.journal_path] {
            if path.exists() {
                let moved = self
                    .keep_aside(path, "unusable", false)
                    .map_err(|e| self.error("setting aside", path, e))?;
                kept.push(moved.display().to_string());
            }
        }
        tracing::warn!(reason = why, files = ?kept, "checkpoint set aside");
        Ok((!kept.is_empty()).then(|| kept.join(", ")))
    }

    fn save(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        let mut journal = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        self.resume(&mut journal);
        if journal.last.as_ref().is_some_and(|last| {
            // A background save that lost the race to a newer one is dropped.
            last.generation > checkpoint.generation || same_content(last, checkpoint)
        }) {
            return Ok(());
        }
        journal.last = None;
        let Some(open) = &journal.open else {
            // The first save of a run that could not resume, or no journal: a snapshot.
            return self.compact(&mut journal, checkpoint);
        };
        let record = encode_record(open.base, checkpoint)
            .map_err(|e| self.error("encoding a record for", &self.journal_path, e))?;
        let fits = record.len() as u64 <= open.capacity;
        if journal.tail + record.len() as u64 > open.capacity {
            match self.compact(&mut journal, checkpoint) {
                Err(e) if e.kind == StoreErrorKind::NoSpace && fits => {
                    // No room for a snapshot: the journal goes round. Each record is
                    // the whole checkpoint and the newest generation wins, so the
                    // older records it overwrites are not needed (a crash mid-write
                    // leaves the newest intact one further on).
                    if !journal.wrapping {
                        tracing::warn!(error = %e, "checkpoint journal full and no room for a snapshot: writing it round from its start");
                        journal.wrapping = true;
                    }
                    journal.tail = 0;
                }
                done => return done,
            }
        }
        let Some(open) = &journal.open else {
            return Err(self.error("appending to", &self.journal_path, "the journal is closed"));
        };
        let written = open
            .file
            .write_all_at(&record, journal.tail)
            .and_then(|()| open.file.sync_data());
        match written {
            Ok(()) => {
                journal.tail += record.len() as u64;
                journal.last = Some(checkpoint.clone());
                Ok(())
            }
            Err(e) => {
                // The record may be partly written: start over from a snapshot.
                journal.open = None;
                journal.resume = None;
                Err(self.io_error("appending to", &self.journal_path, &e))
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
                Err(StoreError::new(
                    "the checkpoint flusher stopped before saving",
                ))
            })
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The journal names its snapshot by this hash: journals written before the
    /// store used the `fnv` crate must still match (FNV-1a's published vectors).
    #[test]
    fn the_snapshot_hash_is_fnv1a_64() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }
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

    /// The file's mode in octal, as `ls` and `chmod` say it.
    fn mode(path: &Path) -> String {
        format!(
            "{:o}",
            fs::metadata(path).unwrap().permissions().mode() & 0o7777
        )
    }

    #[test]
    fn the_state_directory_is_0700_and_its_files_0600() {
        let root = tempfile::tempdir().unwrap();
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let dir = root.path().join("var/lib/hostnic");
        let store = FileStore::new(&dir).unwrap();
        store.save(&cp(1, 0)).unwrap();
        store.save(&cp(2, 0)).unwrap();
        assert_eq!(mode(&dir), "700", "a new state directory");
        assert_eq!(
            mode(&root.path().join("var/lib")),
            format!("{:o}", 0o777 & !umask()),
            "parents are made as usual"
        );
        for file in [CHECKPOINT_FILE, JOURNAL_FILE] {
            assert_eq!(mode(&dir.join(file)), "600", "{file}");
        }
        // A damaged snapshot is kept aside with the same mode.
        fs::write(dir.join(CHECKPOINT_FILE), b"{torn").unwrap();
        fs::set_permissions(dir.join(CHECKPOINT_FILE), fs::Permissions::from_mode(0o600)).unwrap();
        let _ = FileStore::new(&dir).unwrap().load_verified().unwrap();
        for name in names(&dir) {
            assert_eq!(mode(&dir.join(&name)), "600", "{name}");
        }
        // One an earlier agent made 0755 is made private when the agent starts.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        FileStore::new(&dir).unwrap();
        assert_eq!(mode(&dir), "700", "an existing state directory");
    }

    /// The process's umask (read without changing it, from /proc).
    fn umask() -> u32 {
        let status = fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .map(|v| u32::from_str_radix(v.trim(), 8).unwrap())
            .unwrap()
    }

    #[test]
    fn save_then_load_round_trips_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path()).unwrap();
        assert_eq!(store.load().unwrap(), None);
        store.save(&cp(7, 0)).unwrap();
        assert_eq!(store.load().unwrap(), Some(cp(7, 0)));
        assert_eq!(names(dir.path()), [JOURNAL_FILE, CHECKPOINT_FILE]);
        let size = fs::metadata(store.journal_path()).unwrap().len();
        assert!(
            (MIN_JOURNAL_BYTES..=JOURNAL_BYTES).contains(&size) && size.is_multiple_of(4096),
            "journal of {size} bytes"
        );
    }

    #[test]
    fn the_journal_takes_a_quarter_of_the_free_space_between_its_bounds() {
        assert_eq!(journal_capacity(1 << 30), Some(JOURNAL_BYTES));
        assert_eq!(journal_capacity(64 << 10), Some(16 << 10));
        assert_eq!(journal_capacity(100_000), Some(24 << 10));
        assert_eq!(journal_capacity(63 << 10), None, "below the minimum");
        assert_eq!(journal_capacity(0), None);
    }

    /// A snapshot that does not read is not an error that stops the agent, nor an
    /// empty node taken for the truth: it is kept aside, the damage is reported, and
    /// the journal's newest record is used.
    #[test]
    fn a_torn_or_corrupt_snapshot_is_kept_aside_and_the_newest_record_used() {
        fn halve(b: &mut Vec<u8>) {
            b.truncate(b.len() / 2);
        }
        #[allow(clippy::ptr_arg)] // the same type as `halve`
        fn flip(b: &mut Vec<u8>) {
            b[20] ^= 0x04;
        }
        for (label, damage) in [("torn", halve as fn(&mut Vec<u8>)), ("corrupt", flip)] {
            let dir = tempfile::tempdir().unwrap();
            let store = FileStore::with_journal_capacity(dir.path(), 64 << 10).unwrap();
            for g in 1..=6 {
                store.save(&cp(g, 0)).unwrap();
            }
            let mut bytes = fs::read(store.path()).unwrap();
            damage(&mut bytes);
            fs::write(store.path(), &bytes).unwrap();
            let next = FileStore::with_journal_capacity(dir.path(), 64 << 10).unwrap();
            let loaded = next.load_verified().unwrap();
            assert_eq!(loaded.checkpoint, Some(cp(6, 0)), "{label}");
            let damage = loaded.damage.expect("reported");
            assert_eq!(damage.reason.as_str(), label);
            assert!(
                damage.detail.contains(&format!("state.json.{label}-")),
                "{}",
                damage.detail
            );
            let kept = names(dir.path())
                .into_iter()
                .find(|n| n.starts_with(&format!("state.json.{label}-")))
                .expect("kept aside");
            assert_eq!(
                fs::read(dir.path().join(kept)).unwrap(),
                bytes,
                "kept as it was"
            );
            // The next save writes a fresh snapshot, which loads cleanly.
            next.save(&cp(7, 1)).unwrap();
            let again = FileStore::with_journal_capacity(dir.path(), 64 << 10)
                .unwrap()
                .load_verified()
                .unwrap();
            assert_eq!((again.checkpoint, again.damage), (Some(cp(7, 1)), None));
        }
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
        // The next run reads the journal and appends after its last record: a
        // start writes no snapshot, so it needs no new disk space.
        let next = FileStore::new(dir.path()).unwrap();
        assert_eq!(next.load().unwrap(), Some(cp(50, 0)));
        let before = fs::read(next.path()).unwrap();
        for g in 51..=60 {
            next.save(&cp(g, 0)).unwrap();
        }
        assert_eq!(
            fs::read(next.path()).unwrap(),
            before,
            "no snapshot written"
        );
        assert_eq!(names(dir.path()), [JOURNAL_FILE, CHECKPOINT_FILE]);
        assert_eq!(
            FileStore::new(dir.path()).unwrap().load().unwrap(),
            Some(cp(60, 0))
        );
        // A run that did not load (nothing to resume) starts with a snapshot.
        let blind = FileStore::new(dir.path()).unwrap();
        blind.save(&cp(61, 0)).unwrap();
        let snapshot = Checkpoint::from_json(&fs::read(blind.path()).unwrap()).unwrap();
        assert_eq!(snapshot, cp(61, 0));
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
        // A new run that loaded it does not write it again either.
        let next = FileStore::new(dir.path()).unwrap();
        assert_eq!(next.load().unwrap(), Some(cp(4, 0)));
        let journal = fs::read(store.journal_path()).unwrap();
        let mut again = cp(4, 0);
        again.generation = 5;
        next.save(&again).unwrap();
        assert_eq!(fs::read(store.journal_path()).unwrap(), journal);
        // One that did not load writes it.
        let blind = FileStore::new(dir.path()).unwrap();
        blind.save(&again).unwrap();
        assert_eq!(blind.load().unwrap(), Some(again));
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

    /// A deleted snapshot is reported as missing, and the journal's newest record is
    /// used (the startup reconcile completes it from the witnesses). The engine counts
    /// on from the highest generation seen, so the old life's records never come
    /// back over what it writes next.
    #[test]
    fn a_deleted_snapshot_is_reported_missing_and_the_newest_record_used() {
        let dir = tempfile::tempdir().unwrap();
        let first = FileStore::new(dir.path()).unwrap();
        for g in 1..=30 {
            first.save(&cp(g, 1)).unwrap();
        }
        fs::remove_file(first.path()).unwrap();
        let second = FileStore::new(dir.path()).unwrap();
        let loaded = second.load_verified().unwrap();
        assert_eq!(loaded.checkpoint, Some(cp(30, 1)));
        assert_eq!(loaded.generation, 30);
        assert_eq!(loaded.damage.unwrap().reason, RecoveryReason::Missing);
        second.save(&cp(31, 2)).unwrap();
        second.save(&cp(32, 2)).unwrap();
        assert_eq!(
            FileStore::new(dir.path()).unwrap().load().unwrap(),
            Some(cp(32, 2))
        );
    }

    /// The records of one snapshot, with their offsets.
    fn records(journal: &[u8]) -> Vec<(usize, usize)> {
        let mut at = 0;
        let mut found = Vec::new();
        while let Some(r) = parse_record(journal, at, true) {
            found.push((r.offset, r.len));
            at += r.len;
        }
        found
    }

    /// One byte changed in any record but the last is corruption, not a torn tail:
    /// reported, the journal copied aside, and the newest intact record used.
    #[test]
    fn a_damaged_record_before_newer_ones_is_reported_and_the_newest_one_used() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::with_journal_capacity(dir.path(), 64 << 10).unwrap();
        for g in 1..=34 {
            store.save(&cp(g, 0)).unwrap();
        }
        let journal = fs::read(store.journal_path()).unwrap();
        let recs = records(&journal);
        assert_eq!(recs.len(), 33);
        for (k, &(offset, len)) in recs[..recs.len() - 1].iter().enumerate() {
            for at in [
                offset,
                offset + 5,
                offset + 17,
                offset + 27,
                offset + len - 1,
            ] {
                let mut image = journal.clone();
                image[at] ^= 0x01;
                fs::write(store.journal_path(), &image).unwrap();
                let loaded = FileStore::with_journal_capacity(dir.path(), 64 << 10)
                    .unwrap()
                    .load_verified()
                    .unwrap();
                assert_eq!(loaded.checkpoint, Some(cp(34, 0)), "record {k}, byte {at}");
                let damage = loaded.damage.expect("corruption is reported");
                assert_eq!(damage.reason, RecoveryReason::Corrupt, "{}", damage.detail);
                assert!(
                    damage.detail.contains("state.journal.corrupt-"),
                    "{}",
                    damage.detail
                );
            }
        }
        let kept = names(dir.path());
        assert!(
            kept.iter().any(|n| n.starts_with("state.journal.corrupt-")),
            "{kept:?}"
        );
    }

    #[test]
    fn a_journal_filled_with_random_bytes_is_reported_and_the_snapshot_used() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::with_journal_capacity(dir.path(), 256 << 10).unwrap();
        for g in 1..=10 {
            store.save(&cp(g, 0)).unwrap();
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..256 << 10)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        fs::write(store.journal_path(), &noise).unwrap();
        let loaded = FileStore::with_journal_capacity(dir.path(), 256 << 10)
            .unwrap()
            .load_verified()
            .unwrap();
        assert_eq!(loaded.checkpoint, Some(cp(1, 0)), "the snapshot");
        assert_eq!(loaded.damage.unwrap().reason, RecoveryReason::Corrupt);
    }

    #[test]
    fn a_checkpoint_of_a_newer_hostnic_is_refused_but_damage_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path();
        assert!(newer_checkpoint(state).is_none(), "no checkpoint");
        let store = FileStore::new(state).unwrap();
        store.save(&cp(1, 0)).unwrap();
        assert!(newer_checkpoint(state).is_none(), "our own format");
        let text = fs::read_to_string(state.join(CHECKPOINT_FILE)).unwrap();
        let newer = text.replace("\"hostnic/1\"", "\"hostnic/2\"");
        assert_ne!(newer, text);
        fs::write(state.join(CHECKPOINT_FILE), &newer).unwrap();
        let e = newer_checkpoint(state).unwrap();
        assert_eq!(e.format, "hostnic/2");
        assert!(e.to_string().contains("newer hostnic"), "{e}");
        // Cut in half it still names its version: refused, not rebuilt over.
        fs::write(state.join(CHECKPOINT_FILE), &newer[..newer.len() / 2]).unwrap();
        assert!(newer_checkpoint(state).is_some());
        // Garbage is damage, for the recovery to handle.
        fs::write(state.join(CHECKPOINT_FILE), b"\x00\x01garbage").unwrap();
        assert!(newer_checkpoint(state).is_none());
        // A newer journal format.
        fs::remove_file(state.join(CHECKPOINT_FILE)).unwrap();
        let mut journal = fs::read(state.join(JOURNAL_FILE)).unwrap_or_default();
        journal.resize(journal.len().max(8), 0);
        journal[..4].copy_from_slice(b"HNJ2");
        fs::write(state.join(JOURNAL_FILE), &journal).unwrap();
        assert_eq!(newer_checkpoint(state).unwrap().format, "journal HNJ2");
    }

    #[test]
    fn an_unusable_checkpoint_is_set_aside_and_the_next_save_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path()).unwrap();
        store.save(&cp(1, 0)).unwrap();
        store.save(&cp(2, 0)).unwrap();
        let next = FileStore::new(dir.path()).unwrap();
        assert_eq!(next.load().unwrap(), Some(cp(2, 0)));
        let kept = next.set_aside("another instance's").unwrap().unwrap();
        assert!(kept.contains("state.json.unusable-") && kept.contains("state.journal.unusable-"));
        assert_eq!(next.load().unwrap(), None);
        next.save(&cp(3, 1)).unwrap();
        assert_eq!(
            FileStore::new(dir.path()).unwrap().load().unwrap(),
            Some(cp(3, 1))
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
        offsets.extend(records(&journal).iter().map(|(o, l)| o + l));
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
                    .load_verified()
                    .unwrap();
                assert_eq!(
                    (loaded.checkpoint, loaded.damage),
                    (Some(cp(4, 0)), None),
                    "record 5 torn after {cut} bytes: a crash, not damage"
                );
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
            let mut child = KillOnDrop(
                Command::new(&exe)
                    .args([
                        "--exact",
                        "tests::a_process_killed_while_saving_loses_no_acknowledged_checkpoint",
                        "--nocapture",
                        "--test-threads",
                        "1",
                    ])
                    .env(CHILD, dir.path())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            );
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
