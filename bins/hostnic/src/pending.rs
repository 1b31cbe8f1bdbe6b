//! Writing a pending DEL durably when the agent cannot be reached.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use hostnic_core::api::{PENDING_DEL_DIR, PendingDel, pending_del_file_name};

/// Writes `record` to `<state_dir>/pending-del/<name>.json`: a temporary
/// dot-file, `fsync`, `rename` over the final name, `fsync` of the directory.
/// Returns the final path.
pub fn write_pending_del(state_dir: &Path, record: &PendingDel) -> io::Result<PathBuf> {
    let dir = state_dir.join(PENDING_DEL_DIR);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    let name = pending_del_file_name(&record.pod.attachment());
    let path = dir.join(&name);
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let body = serde_json::to_vec(record).map_err(io::Error::other)?;
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostnic_core::types::{PodKey, Timestamp};

    #[test]
    fn record_lands_under_pending_del_and_repeats_overwrite_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut rec = PendingDel {
            version: 1,
            pod: PodKey {
                namespace: "ns".into(),
                name: "p".into(),
                container_id: "c1".into(),
                ifname: "eth0".into(),
            },
            netns: None,
            network: "hostnic".into(),
            requested_at_ms: Timestamp(1),
            reason: "down".into(),
            prev_result: None,
        };
        let p1 = write_pending_del(dir.path(), &rec).unwrap();
        rec.requested_at_ms = Timestamp(2);
        let p2 = write_pending_del(dir.path(), &rec).unwrap();
        assert_eq!(p1, p2);
        assert_eq!(p1, dir.path().join("pending-del/c1_eth0.json"));
        let back: PendingDel = serde_json::from_slice(&fs::read(&p1).unwrap()).unwrap();
        assert_eq!(back, rec);
        let names: Vec<_> = fs::read_dir(dir.path().join("pending-del"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary file is left: {names:?}");
    }
}
