//! The agent's use of the QingCloud client: the request-quota breaker as log
//! lines and a Kubernetes event, and the credentials' changes passed to the
//! engine. (Its options, the credentials file and the time scale are the
//! adapter's: `hostnic_qingcloud::agent`.)

use std::path::PathBuf;
use std::sync::Arc;

pub use hostnic_qingcloud::agent::{Scaled, client_options, follow_credentials};
use hostnic_qingcloud::{BreakerState, BreakerStatus, QingCloudClient};
use tokio::sync::watch;

use crate::shared::Shared;
use crate::shutdown::stopped;

/// The agent's QingCloud client, for what the core's ports do not carry: its
/// breaker and budget (metrics, logs, events) and its credentials (reloaded when
/// the file at `credentials` changes).
#[derive(Debug, Clone)]
pub struct CloudClient {
    /// The client (the same one the agent's `Deps::cloud` is, or wraps).
    pub client: QingCloudClient,
    /// The `qcsecret` `config.yaml` the credentials came from, watched for changes.
    pub credentials: Option<PathBuf>,
}

/// Logs, counts and reports every transition of the request-quota breaker: a
/// WARN line and a `RequestQuotaExceeded` event on the node when it opens, an INFO
/// line and `RequestQuotaRecovered` when it closes.
pub(crate) async fn breaker_task(shared: Arc<Shared>, mut breaker: watch::Receiver<BreakerState>) {
    let mut stop = shared.shutdown.clone();
    let mut was = breaker.borrow_and_update().status;
    loop {
        tokio::select! {
            changed = breaker.changed() => if changed.is_err() { return },
            _ = stopped(&mut stop) => return,
        }
        let state = breaker.borrow_and_update().clone();
        let message = state.last_error.clone().unwrap_or_default();
        match (was, state.status) {
            (BreakerStatus::Closed, BreakerStatus::Open | BreakerStatus::Probing) => {
                tracing::warn!(
                    message = %message,
                    trips = state.trips,
                    next_probe_in = ?state.next_probe_in(),
                    "the account's API request quota is exhausted: the agent stops calling the cloud and probes it rarely; pods that need a new NIC wait"
                );
                if let Some(reporter) = &shared.reporter {
                    reporter.request_quota(true, &message);
                }
            }
            (BreakerStatus::Open | BreakerStatus::Probing, BreakerStatus::Closed) => {
                tracing::info!(
                    probes = state.probes,
                    refused = state.refused,
                    "the account's API request quota is available again: cloud calls resume"
                );
                if let Some(reporter) = &shared.reporter {
                    reporter.request_quota(false, "cloud calls resume");
                }
                // What waited for the cloud may go now.
                shared.pool_wake.notify_one();
            }
            _ => {}
        }
        was = state.status;
    }
}

/// Tells the engine every time the credentials changed: what the API refused
/// (a wrong secret) may succeed now.
pub(crate) async fn credentials_followed(shared: Arc<Shared>, mut changed: watch::Receiver<u64>) {
    let mut stop = shared.shutdown.clone();
    loop {
        tokio::select! {
            c = changed.changed() => if c.is_err() { return },
            _ = stopped(&mut stop) => return,
        }
        shared.engine.credentials_changed();
        shared.pool_wake.notify_one();
        shared.reconcile_wake.notify_one();
    }
}
