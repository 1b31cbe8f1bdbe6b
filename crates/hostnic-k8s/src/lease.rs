//! Leader election on a `coordination.k8s.io/v1` Lease, the algorithm of
//! client-go's `leaderelection`: every candidate reads the Lease each retry
//! period; the holder renews it; a candidate takes it over only when it has seen
//! the same record, unrenewed, for a whole lease duration (measured on its own
//! monotonic clock, so clock skew between machines does not matter); every write
//! is a replace naming the resourceVersion it read, so of two candidates racing
//! for an expired Lease the API server lets exactly one win (409 for the other).
//!
//! A leader that cannot renew within the renew deadline (shorter than the lease
//! duration) steps down on its own, before anyone else may take over. On a
//! graceful shutdown the leader releases the Lease (empty holder), so another
//! replica takes over at its next retry instead of after the lease duration.
//!
//! Why not a crate: `kube-leader-election` needs kube 4; `kube-lease-manager`
//! (kube 5) relies on server-side-apply field ownership for mutual exclusion and
//! compares the holder's wall-clock renew time with the local wall clock.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Settings of the election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This candidate's identity (unique: pod name plus a random suffix).
    pub identity: String,
    /// How long a Lease holds without renewal (written as `leaseDurationSeconds`).
    pub lease_duration: Duration,
    /// A leader that could not renew for this long steps down (< lease duration).
    pub renew_deadline: Duration,
    /// How often candidates try and the leader renews.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry period.
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Who leads, as far as this candidate knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leadership {
    /// This candidate holds the Lease.
    Leader,
    /// Another one does (or nobody, yet).
    Follower {
        /// The holder seen last.
        holder: Option<String>,
    },
}

impl Leadership {
    /// True when this candidate leads.
    pub fn is_leader(&self) -> bool {
        matches!(self, Leadership::Leader)
    }
}

/// What this candidate saw of the Lease, to tell an expired holder from a live one.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Observed {
    holder: Option<String>,
    renew: Option<MicroTime>,
    transitions: Option<i32>,
}

/// Annotations carried on the Lease: the leader writes `write` with every renewal
/// (no extra requests), and every candidate keeps what it `read` last, so a new
/// leader can take over state the previous one kept there (the controller's
/// request budget spent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseNotes {
    /// Written with every renewal.
    pub write: BTreeMap<String, String>,
    /// Seen on the Lease at the last read.
    pub read: BTreeMap<String, String>,
}

/// One candidate.
#[derive(Debug)]
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: Option<(Observed, Instant)>,
    /// When the leader last renewed successfully.
    renewed: Option<Instant>,
    notes: Arc<Mutex<LeaseNotes>>,
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

fn seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

impl LeaderElector {
    /// A candidate for the Lease of `config`.
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
            renewed: None,
            notes: Arc::default(),
        }
    }

    /// The annotations this candidate carries on the Lease and has read from it.
    pub fn notes(&self) -> Arc<Mutex<LeaseNotes>> {
        self.notes.clone()
    }

    fn lock_notes(&self) -> std::sync::MutexGuard<'_, LeaseNotes> {
        self.notes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `lease` with the annotations to write.
    fn annotated(&self, mut lease: Lease) -> Lease {
        let write = self.lock_notes().write.clone();
        if !write.is_empty() {
            lease
                .metadata
                .annotations
                .get_or_insert_with(Default::default)
                .extend(write);
        }
        lease
    }

    /// One try to acquire or renew the Lease. `Ok(true)`: this candidate leads.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let me = self.config.identity.clone();
        let lease = match self.api.get_opt(&self.config.name).await? {
            Some(l) => l,
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(self.spec_for_me(None, 0)),
                };
                let lease = self.annotated(lease);
                return match self.api.create(&PostParams::default(), &lease).await {
                    Ok(created) => {
                        self.observe(&created);
                        self.renewed = Some(Instant::now());
                        Ok(true)
                    }
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(e) => Err(e),
                };
            }
        };
        self.observe(&lease);
        self.lock_notes().read = lease.metadata.annotations.clone().unwrap_or_default();
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let mine = holder.as_deref() == Some(me.as_str());
        if !mine && holder.is_some() {
            let since = self
                .observed
                .as_ref()
                .map(|(_, t)| *t)
                .unwrap_or_else(Instant::now);
            if since.elapsed() < self.config.lease_duration {
                return Ok(false);
            }
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!mine);
        let acquired = if mine {
            spec.acquire_time.clone()
        } else {
            None
        };
        let mut next = lease.clone();
        next.spec = Some(self.spec_for_me(acquired, transitions));
        // A new leader writes its notes only once it has read the previous ones.
        let next = if mine { self.annotated(next) } else { next };
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &next)
            .await
        {
            Ok(written) => {
                if !mine {
                    tracing::info!(lease = %self.config.name, identity = %me, previous = ?holder, "acquired the lease");
                }
                self.observe(&written);
                self.renewed = Some(Instant::now());
                Ok(true)
            }
            // Someone else wrote first: read again at the next try.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn spec_for_me(&self, acquired: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        let t = now();
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(seconds(self.config.lease_duration)),
            acquire_time: Some(acquired.unwrap_or_else(|| t.clone())),
            renew_time: Some(t),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    fn observe(&mut self, lease: &Lease) {
        let spec = lease.spec.clone().unwrap_or_default();
        let seen = Observed {
            holder: spec.holder_identity,
            renew: spec.renew_time,
            transitions: spec.lease_transitions,
        };
        if self.observed.as_ref().map(|(o, _)| o) != Some(&seen) {
            self.observed = Some((seen, Instant::now()));
        }
    }

    /// The holder seen last.
    pub fn holder(&self) -> Option<String> {
        self.observed
            .as_ref()
            .and_then(|(o, _)| o.holder.clone())
            .filter(|h| !h.is_empty())
    }

    /// Gives the Lease up if this candidate holds it (empty holder, renewed now),
    /// so another candidate takes over at its next try.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = Some(now());
        spec.lease_duration_seconds = Some(1);
        self.api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await?;
        tracing::info!(lease = %self.config.name, identity = %self.config.identity, "released the lease");
        self.renewed = None;
        Ok(())
    }

    /// Runs the election until `shutdown` turns true, publishing leadership on
    /// `tx`. A leader that could not renew for the renew deadline steps down; on
    /// shutdown a leader releases the Lease.
    pub async fn run(mut self, tx: watch::Sender<Leadership>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let leading = match self.try_acquire_or_renew().await {
                Ok(ok) => ok,
                Err(e) => {
                    tracing::warn!(lease = %self.config.name, error = %e, "lease");
                    false
                }
            };
            let was = tx.borrow().is_leader();
            let taken = self.holder().is_some_and(|h| h != self.config.identity);
            let now_leading = if leading {
                true
            } else if taken {
                // Another candidate holds it: step down at once.
                false
            } else if was {
                // Keep leading while the last renewal is within the renew deadline.
                self.renewed
                    .is_some_and(|t| t.elapsed() < self.config.renew_deadline)
            } else {
                false
            };
            if was && !now_leading {
                tracing::warn!(lease = %self.config.name, identity = %self.config.identity, "lost the lease");
            }
            let state = if now_leading {
                Leadership::Leader
            } else {
                Leadership::Follower {
                    holder: self.holder(),
                }
            };
            tx.send_if_modified(|s| {
                if *s == state {
                    false
                } else {
                    *s = state;
                    true
                }
            });
            // A little jitter, so that candidates do not retry in lockstep.
            let jitter = self.config.retry_period.mul_f64(rand_fraction() * 0.2);
            tokio::select! {
                _ = tokio::time::sleep(self.config.retry_period + jitter) => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
        }
        if tx.borrow().is_leader() {
            tx.send_replace(Leadership::Follower { holder: None });
            if let Err(e) = self.release().await {
                tracing::warn!(lease = %self.config.name, error = %e, "releasing the lease");
            }
        }
    }
}

/// A number in [0, 1) from the clock's nanoseconds (jitter needs no quality).
fn rand_fraction() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    f64::from(nanos % 1000) / 1000.0
}

/// Starts the election in a task: the receiver tells who leads; the task ends
/// (releasing the Lease if held) once `shutdown` turns true.
pub fn spawn(
    client: Client,
    config: LeaseConfig,
    shutdown: watch::Receiver<bool>,
) -> (watch::Receiver<Leadership>, JoinHandle<()>) {
    let (rx, _, task) = spawn_with_notes(client, config, shutdown);
    (rx, task)
}

/// [`spawn`], with the annotations the candidate carries on the Lease.
pub fn spawn_with_notes(
    client: Client,
    config: LeaseConfig,
    shutdown: watch::Receiver<bool>,
) -> (
    watch::Receiver<Leadership>,
    Arc<Mutex<LeaseNotes>>,
    JoinHandle<()>,
) {
    let (tx, rx) = watch::channel(Leadership::Follower { holder: None });
    let elector = LeaderElector::new(client, config);
    let notes = elector.notes();
    (rx, notes, tokio::spawn(elector.run(tx, shutdown)))
}
