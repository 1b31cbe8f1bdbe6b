//! Start-up that says what holds it up: each step of the start (credentials,
//! the instance, the node's datapath, the checkpoint, the startup reconcile) is
//! attempted through [`retry`], which records the last failure with its cause
//! and its fix in the core's start-up record ([`Startup`]) and logs it; a
//! permanent failure is retried only every 30 s to 5 min.

use std::future::Future;
use std::time::Duration;

use hostnic_core::api::introspect::Build;
use hostnic_core::backoff::ExponentialBackoff;
pub use hostnic_core::startup::{
    Diagnose, Diagnosis, Failed, PERMANENT_BACKOFF, Startup, TRANSIENT_BACKOFF,
};
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::shutdown::stopped;

/// The version and commit of this build (`HOSTNIC_COMMIT` from the build script).
pub fn build() -> Build {
    Build {
        version: env!("CARGO_PKG_VERSION").to_string(),
        commit: env!("HOSTNIC_COMMIT").to_string(),
    }
}

/// How the start's retries are paced.
pub struct Pace {
    /// Model seconds per real second (the scale harness runs its agents faster than
    /// real time); 1 for a real agent.
    pub scale: f64,
    /// Spreads a fleet's retries apart (±20 %): the node's own number.
    pub seed: u64,
    /// How long to wait after the cloud refused the account (wrong keys, no
    /// balance) instead of retrying (model time): a fleet retrying wrong keys
    /// every few minutes would spend the account's request quota ...
    pub hold: Duration,
    /// ... unless the credentials change before (the agent follows its Secret).
    pub credentials: Option<watch::Receiver<u64>>,
}

impl Default for Pace {
    fn default() -> Self {
        Pace {
            scale: 1.0,
            seed: 0,
            hold: PERMANENT_BACKOFF.max,
            credentials: None,
        }
    }
}

impl Pace {
    fn real(&self, d: Duration) -> Duration {
        d.div_f64(self.scale)
    }

    async fn credentials_changed(&mut self) {
        let changed = match &mut self.credentials {
            Some(rx) => rx.changed().await.is_ok(),
            None => false,
        };
        if !changed {
            std::future::pending::<()>().await;
        }
    }
}

/// Attempts `step` until it succeeds or the agent stops (`None`): a transient
/// failure is retried with [`TRANSIENT_BACKOFF`], a permanent one with
/// [`PERMANENT_BACKOFF`], a refusal of the account (`refused`) after
/// [`Pace::hold`], each spread ±20 % per node and cut short when the credentials
/// change; each failure is recorded in `startup`, counted in
/// `hostnic_startup_failures_total{step,permanent}` and logged with its cause
/// and fix.
pub async fn retry<T, E, F, Fut>(
    startup: &Startup,
    metrics: &Metrics,
    pace: &mut Pace,
    step: &'static str,
    shutdown: &mut watch::Receiver<bool>,
    refused: impl Fn(&E) -> bool,
    mut f: F,
) -> Option<T>
where
    E: Diagnose,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    startup.begin(step);
    let (mut transient, mut permanent) = (0u32, 0u32);
    loop {
        let (e, refusal) = match f().await {
            Ok(v) => return Some(v),
            Err(e) => (e.diagnose(), refused(&e)),
        };
        let delay = pace.real(if refusal {
            ExponentialBackoff::new(pace.hold, pace.hold).spread(0, pace.seed)
        } else if e.permanent {
            permanent += 1;
            PERMANENT_BACKOFF.spread(permanent - 1, pace.seed)
        } else {
            transient += 1;
            TRANSIENT_BACKOFF.spread(transient - 1, pace.seed)
        });
        startup.failed(&e, Some(delay));
        let kind = if e.permanent { "true" } else { "false" };
        metrics.inc(
            "hostnic_startup_failures_total",
            &[("step", step), ("permanent", kind)],
        );
        if e.permanent {
            tracing::error!(
                error = %e.message,
                cause = %e.cause,
                fix = %e.fix,
                retry_in = ?delay,
                "{step} failed permanently: {}; fix: {}",
                e.cause,
                e.fix
            );
        } else {
            tracing::warn!(error = %e.message, cause = %e.cause, retry_in = ?delay, "{step} failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = pace.credentials_changed() => {
                tracing::info!("{step}: the credentials changed; trying again now");
                (transient, permanent) = (0, 0);
            }
            _ = stopped(shutdown) => return None,
        }
    }
}
