//! What a file looks like now: the agent fingerprints the files it read at
//! start, to notice that a restart would read something new.

use std::path::Path;

/// A hash of `path`'s content now, `None` when it cannot be read: a change
/// detector (FNV-1a), not a checksum anyone relies on. The start-up record's
/// [`Fingerprint`](hostnic_core::startup::Fingerprint).
pub fn fingerprint(path: &Path) -> Option<u64> {
    std::fs::read(path).ok().map(|bytes| crate::fnv1a(&bytes))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hostnic_core::startup::{Diagnosis, Startup};

    use super::*;

    #[test]
    fn a_changed_input_makes_a_restart_worth_it_only_under_a_permanent_failure() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("config.yaml");
        std::fs::write(&creds, "qy_access_key_id: a\n").unwrap();
        let startup = Startup::new(vec![creds.clone()], fingerprint);
        startup.begin("resolving the instance");
        std::fs::write(&creds, "qy_access_key_id: b\n").unwrap();
        // No failure yet: nothing to restart for.
        assert_eq!(startup.restart_would_help(), None);
        let transient = Diagnosis::new("x", "y", "z", false);
        startup.failed(&transient, Some(Duration::from_secs(1)));
        assert_eq!(startup.restart_would_help(), None);
        let permanent = Diagnosis::new("1200", "bad key", "check qcsecret", true);
        startup.failed(&permanent, Some(Duration::from_secs(30)));
        let why = startup.restart_would_help().expect("restart helps");
        assert!(why.contains("config.yaml"), "{why}");
        let s = startup.status(Default::default());
        assert_eq!(s.attempts, 2);
        assert!(s.next_attempt_in_secs.unwrap() >= 29);
        startup.done();
        assert_eq!(startup.restart_would_help(), None);
    }
}
