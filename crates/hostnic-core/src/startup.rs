//! Start-up that says what holds it up: the record of a start's steps and its
//! last failure with its cause and its fix ([`Diagnosis`]), which `/readyz`,
//! `/v1/status` and `hostnicctl status` show, and the diagnosis of the errors a
//! start meets. (The agent's `startup::retry` attempts each step.)
//!
//! A failure that trying again cannot fix (wrong keys, an instance that does not
//! exist, no permission, a checkpoint of a newer hostnic) is *permanent*: it is
//! retried only every 30 s to 5 min ([`PERMANENT_BACKOFF`]), not in a tight loop.
//! Files the agent read at start (the credentials, its configuration, the
//! instance id) are fingerprinted: when one changes while a permanent failure
//! holds the start, restarting helps (the agent reads them only at start), so
//! [`Startup::restart_would_help`] says so and `/healthz` fails, which makes the
//! kubelet restart the container.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::api::introspect::{self, Build, StartupError};
use crate::backoff::ExponentialBackoff;
use crate::engine::EngineError;
use crate::identity::IdentityError;
use crate::ports::{CloudError, CloudErrorKind, HostError, HostErrorKind, StoreError};

// QingCloud's `ret_code`s a start can meet (the API reference's error codes).
const AUTH_FAILED: i64 = 1200;
const REQUEST_EXPIRED: i64 = 1300;
const ACCESS_DENIED: i64 = 1400;
const INSUFFICIENT_BALANCE: i64 = 2400;

/// Retries of a failure that may go away by itself: 200 ms doubling up to 10 s.
pub const TRANSIENT_BACKOFF: ExponentialBackoff =
    ExponentialBackoff::new(Duration::from_millis(200), Duration::from_secs(10));

/// Retries of a permanent failure: 30 s doubling up to 5 min. Rare enough not to
/// load the cloud API (a wrong key costs one call per attempt), frequent enough
/// that a fix which needs no restart (an instance that appears, a checkpoint moved
/// aside) is picked up soon.
pub const PERMANENT_BACKOFF: ExponentialBackoff =
    ExponentialBackoff::new(Duration::from_secs(30), Duration::from_secs(300));

/// What a failure means for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    /// The error itself, with the endpoint or file it concerns.
    pub message: String,
    /// What it means, in one line.
    pub cause: String,
    /// What to do about it.
    pub fix: String,
    /// Trying again without a change will not help.
    pub permanent: bool,
}

impl Diagnosis {
    /// `message` with its cause, its fix and whether it is permanent.
    pub fn new(message: impl ToString, cause: &str, fix: &str, permanent: bool) -> Self {
        Self {
            message: message.to_string(),
            cause: cause.to_string(),
            fix: fix.to_string(),
            permanent,
        }
    }
}

/// Errors that can say what they mean for the operator.
pub trait Diagnose {
    /// Cause, fix and whether retrying can help.
    fn diagnose(&self) -> Diagnosis;
}

const FIX_QCSECRET: &str = "check qy_access_key_id and qy_secret_access_key in the qcsecret \
     Secret's config.yaml (kubectl -n kube-system get secret qcsecret -o yaml); the agent \
     reads it again when restarted";

impl Diagnose for CloudError {
    fn diagnose(&self) -> Diagnosis {
        let msg = self.to_string();
        match (self.kind, self.code) {
            (_, Some(AUTH_FAILED)) => Diagnosis::new(
                msg,
                "the QingCloud API rejected the access key or its signature (ret_code 1200)",
                FIX_QCSECRET,
                true,
            ),
            (_, Some(REQUEST_EXPIRED)) => Diagnosis::new(
                msg,
                "the QingCloud API says the request expired (ret_code 1300): this node's \
                 clock is more than 60 s off",
                "synchronise the node's clock (chrony or systemd-timesyncd)",
                true,
            ),
            (_, Some(ACCESS_DENIED)) => Diagnosis::new(
                msg,
                "the QingCloud API denied access (ret_code 1400): the access key may not \
                 use NICs, instances and vxnets, or the instance is not this account's",
                "give the key of the qcsecret Secret those permissions, and check \
                 /etc/qingcloud/instance-id",
                true,
            ),
            (_, Some(INSUFFICIENT_BALANCE)) => Diagnosis::new(
                msg,
                "the account's balance is insufficient (ret_code 2400)",
                "top up the QingCloud account",
                true,
            ),
            (CloudErrorKind::NotFound, _) => Diagnosis::new(
                msg,
                "the cloud does not know this resource in the configured zone",
                "check /etc/qingcloud/instance-id (the node's instance id) and `zone` in the \
                 qcsecret Secret's config.yaml",
                true,
            ),
            (CloudErrorKind::Throttled, _) => Diagnosis::new(
                msg,
                "the account's API request quota is exhausted (ret_code 2500), or the client \
                 holds calls back to protect it",
                "wait: the client probes the quota rarely and resumes by itself; find what \
                 else uses the account's quota (docs/troubleshooting.md, \"API quota\")",
                false,
            ),
            (CloudErrorKind::QuotaExceeded, _) => Diagnosis::new(
                msg,
                "a resource quota is exhausted (NICs, addresses of the vxnet)",
                "free addresses in the vxnet or add vxnets (docs/troubleshooting.md, \
                 \"vxnet full\")",
                false,
            ),
            (CloudErrorKind::Retryable, None) => Diagnosis::new(
                msg,
                "the QingCloud API cannot be reached",
                "check the node's network and DNS, and host, port and protocol in the \
                 qcsecret Secret's config.yaml; retried with backoff",
                false,
            ),
            (CloudErrorKind::Retryable, Some(_)) => Diagnosis::new(
                msg,
                "the QingCloud API failed internally or is busy",
                "none needed: retried with backoff",
                false,
            ),
            (CloudErrorKind::Permanent, _) => Diagnosis::new(
                msg,
                "the QingCloud API refused the request",
                "read the API's message above; check the qcsecret Secret's config.yaml",
                true,
            ),
        }
    }
}

impl Diagnose for IdentityError {
    fn diagnose(&self) -> Diagnosis {
        match self {
            IdentityError::Cloud(e) => e.diagnose(),
            IdentityError::NoSuchVxnet(v) => Diagnosis::new(
                self,
                &format!("pod vxnet {v} does not exist in the instance's zone"),
                "fix `vxnets` in the agent's ConfigMap, or the node annotation \
                 node.beta.kubernetes.io/vxnet",
                true,
            ),
        }
    }
}

/// True when an OS error text says the process lacks a privilege.
fn not_permitted(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("operation not permitted")
        || m.contains("permission denied")
        || m.contains("eperm")
        || m.contains("eacces")
}

const FIX_ROOT: &str = "run the agent as root with NET_ADMIN, NET_RAW and SYS_ADMIN (the \
     DaemonSet's container is privileged and in the host network; keep it so)";

impl Diagnose for HostError {
    fn diagnose(&self) -> Diagnosis {
        if not_permitted(&self.message) {
            return Diagnosis::new(
                self,
                "the agent may not change the node's network",
                FIX_ROOT,
                true,
            );
        }
        match self.kind {
            HostErrorKind::Retryable | HostErrorKind::NotFound => Diagnosis::new(
                self,
                "the node's datapath is not ready yet",
                "none needed: retried with backoff",
                false,
            ),
            HostErrorKind::Mismatch | HostErrorKind::Permanent => Diagnosis::new(
                self,
                "the node's datapath refused a change",
                "read the error above; check that nftables and iproute2 work on the node \
                 (`nft list ruleset`)",
                true,
            ),
        }
    }
}

impl Diagnose for StoreError {
    fn diagnose(&self) -> Diagnosis {
        if not_permitted(&self.message) {
            return Diagnosis::new(
                self,
                "the agent may not write its state directory",
                FIX_ROOT,
                true,
            );
        }
        Diagnosis::new(
            self,
            "the checkpoint cannot be written",
            "make room on the state directory's disk (docs/troubleshooting.md)",
            false,
        )
    }
}

impl Diagnose for EngineError {
    fn diagnose(&self) -> Diagnosis {
        match self {
            EngineError::Cloud(e) => e.diagnose(),
            EngineError::Host(e) => e.diagnose(),
            EngineError::Store(e) => e.diagnose(),
            other => Diagnosis::new(
                other,
                "the startup reconcile failed",
                "none needed: retried with backoff",
                false,
            ),
        }
    }
}

/// A failure the binary met before the agent could run (credentials file, the
/// instance id, the datapath), already diagnosed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.message)]
pub struct Failed(pub Diagnosis);

impl Diagnose for Failed {
    fn diagnose(&self) -> Diagnosis {
        self.0.clone()
    }
}

impl Failed {
    /// `state_dir` holds a checkpoint of a newer hostnic: permanent, with the way on.
    pub fn newer_checkpoint(state_dir: &Path, found: &impl std::fmt::Display) -> Self {
        Self::new(
            format!("{found} (this agent is {})", env!("CARGO_PKG_VERSION")),
            "an older agent cannot know what a newer checkpoint records, so it does not \
             start over it (rebuilding could cut pods off)",
            &format!(
                "run the newer hostnic again (roll the DaemonSet's image forward); to \
                 downgrade anyway, drain the node and move {} aside: the agent then \
                 rebuilds from the node (docs/upgrade.md)",
                state_dir.display()
            ),
            true,
        )
    }

    /// `message` with its cause, its fix and whether it is permanent.
    pub fn new(message: impl ToString, cause: &str, fix: &str, permanent: bool) -> Self {
        Self(Diagnosis::new(message, cause, fix, permanent))
    }

    /// An OS error about `what`: permanent, and "run as root" when it is a privilege.
    pub fn io(what: &str, e: &std::io::Error) -> Self {
        let message = format!("{what}: {e}");
        if not_permitted(&message) {
            Self::new(message, "the agent lacks a privilege", FIX_ROOT, true)
        } else {
            Self::new(
                message,
                "a file or directory the agent needs cannot be used",
                "check the path and the DaemonSet's volume mounts (deploy/README.md, \"What \
                 is where\")",
                true,
            )
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    step: String,
    attempts: u32,
    error: Option<StartupError>,
    next_attempt: Option<Instant>,
    done: bool,
}

/// Reads what a file looks like now (a hash of its content), `None` when it
/// cannot be read: the adapter's (`hostnic_linux::fingerprint`).
pub type Fingerprint = fn(&Path) -> Option<u64>;

/// The start's progress and its last failure, shared with the HTTP endpoint.
#[derive(Debug)]
pub struct Startup {
    inner: Mutex<Inner>,
    inputs: Vec<(PathBuf, Option<u64>)>,
    fingerprint: Fingerprint,
}

impl Default for Startup {
    fn default() -> Self {
        Self::new(Vec::new(), |_| None)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Startup {
    /// A start that read `inputs` (credentials, configuration, instance id): their
    /// content now (as `fingerprint` reads it) is what a restart would change.
    pub fn new(inputs: Vec<PathBuf>, fingerprint: Fingerprint) -> Self {
        let inputs = inputs
            .into_iter()
            .map(|p| {
                let seen = fingerprint(&p);
                (p, seen)
            })
            .collect();
        Self {
            inner: Mutex::new(Inner {
                step: "starting".into(),
                ..Inner::default()
            }),
            inputs,
            fingerprint,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new step begins.
    pub fn begin(&self, step: &str) {
        let mut inner = self.lock();
        inner.step = step.to_string();
        inner.attempts = 0;
        inner.next_attempt = None;
    }

    /// The current step failed with `diagnosis`; the next attempt in `retry_in`
    /// (`None`: not retried).
    pub fn failed(&self, diagnosis: &Diagnosis, retry_in: Option<Duration>) {
        let mut inner = self.lock();
        inner.attempts += 1;
        let since_ms = match &inner.error {
            Some(e) if e.step == inner.step && e.message == diagnosis.message => e.since_ms,
            _ => now_ms(),
        };
        inner.error = Some(StartupError {
            step: inner.step.clone(),
            message: diagnosis.message.clone(),
            cause: diagnosis.cause.clone(),
            fix: diagnosis.fix.clone(),
            permanent: diagnosis.permanent,
            since_ms,
        });
        inner.next_attempt = retry_in.map(|d| Instant::now() + d);
    }

    /// The start is over: the agent serves. The last error stays for the record.
    pub fn done(&self) {
        let mut inner = self.lock();
        inner.done = true;
        inner.next_attempt = None;
    }

    /// True once the agent serves.
    pub fn is_done(&self) -> bool {
        self.lock().done
    }

    /// The last failure of the start, if any.
    pub fn last_error(&self) -> Option<StartupError> {
        self.lock().error.clone()
    }

    /// Why restarting the agent would help, when it would: a permanent failure holds
    /// the start and a file the agent read at start has changed since.
    pub fn restart_would_help(&self) -> Option<String> {
        let inner = self.lock();
        if inner.done || !inner.error.as_ref().is_some_and(|e| e.permanent) {
            return None;
        }
        drop(inner);
        let changed: Vec<String> = self
            .inputs
            .iter()
            .filter(|(path, seen)| (self.fingerprint)(path) != *seen)
            .map(|(path, _)| path.display().to_string())
            .collect();
        (!changed.is_empty()).then(|| {
            format!(
                "{} changed since the agent read it at start; restart the agent to use it",
                changed.join(", ")
            )
        })
    }

    /// The `/v1/status` document while starting, for the agent of `build`.
    pub fn status(&self, build: Build) -> introspect::Startup {
        let restart = self.restart_would_help();
        let inner = self.lock();
        introspect::Startup {
            step: inner.step.clone(),
            attempts: inner.attempts,
            error: inner.error.clone(),
            next_attempt_in_secs: inner
                .next_attempt
                .map(|at| at.saturating_duration_since(Instant::now()).as_secs()),
            restart_would_help: restart,
            build,
        }
    }

    /// `/readyz`'s text while starting.
    pub fn readyz_text(&self) -> String {
        let s = self.status(Build::default());
        let mut text = format!("not ready: starting: {}", s.step);
        if let Some(e) = &s.error {
            text.push_str(&format!(
                " (attempt {}{})\n{e}\n",
                s.attempts,
                match (e.permanent, s.next_attempt_in_secs) {
                    (true, Some(n)) => format!(", permanent: next attempt in {n} s"),
                    (false, Some(n)) => format!(", next attempt in {n} s"),
                    (_, None) => ", not retried".into(),
                }
            ));
        } else {
            text.push('\n');
        }
        if let Some(r) = &s.restart_would_help {
            text.push_str(&format!("restart: {r}\n"));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_keys_are_permanent_and_point_at_qcsecret() {
        let e = CloudError::new(
            CloudErrorKind::Permanent,
            "DescribeInstances",
            "signature not matched",
        )
        .with_code(1200);
        let d = e.diagnose();
        assert!(d.permanent);
        assert!(d.cause.contains("1200"), "{d:?}");
        assert!(d.fix.contains("qcsecret"), "{d:?}");
        assert!(d.message.contains("DescribeInstances"), "{d:?}");
    }

    #[test]
    fn an_unknown_instance_names_the_instance_id_file_and_the_zone() {
        let e = CloudError::new(CloudErrorKind::NotFound, "DescribeInstances", "no such")
            .with_code(2100);
        let d = IdentityError::Cloud(e).diagnose();
        assert!(d.permanent);
        assert!(d.fix.contains("/etc/qingcloud/instance-id") && d.fix.contains("zone"));
    }

    #[test]
    fn eperm_says_run_as_root_and_transport_errors_are_transient() {
        let e = HostError::new(
            HostErrorKind::Permanent,
            "setns into /proc/1/ns/net: EPERM: Operation not permitted",
        );
        let d = e.diagnose();
        assert!(d.permanent && d.fix.contains("root"), "{d:?}");
        let t = CloudError::new(
            CloudErrorKind::Retryable,
            "DescribeInstances",
            "transport: GET http://10.0.0.1:443/iaas/: connection refused",
        );
        assert!(!t.diagnose().permanent);
    }
}
