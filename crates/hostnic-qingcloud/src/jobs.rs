//! The shared job poller behind [`QingCloudClient::wait_job`]: however many jobs
//! the process waits for at once, one `DescribeJobs` (`jobs.1`…`jobs.N`, 100 per
//! page) asks for all of them. Each job has its own schedule — first poll after
//! `job_poll_initial`, then doubling up to `job_poll_max` — and a poll made for
//! one job answers every other job in flight as well.
//!
//! The poller is a task of the client's runtime that runs while someone waits
//! and ends when nobody does; a waiter that times out simply stops listening.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hostnic_core::backoff::ExponentialBackoff;
use hostnic_core::ports::{CloudError, CloudErrorKind};
use hostnic_core::types::JobId;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::actions::JobStatus;
use crate::client::QingCloudClient;

type Answer = Result<JobStatus, CloudError>;

#[derive(Debug)]
struct Waiting {
    listeners: Vec<oneshot::Sender<Answer>>,
    due: Instant,
    /// Polls that found the job still running: the next comes after
    /// `job_poll_initial · 2^polls`, capped at `job_poll_max`.
    polls: u32,
}

#[derive(Debug, Default)]
struct Book {
    jobs: HashMap<JobId, Waiting>,
    running: bool,
}

/// The poller of one client (and its clones).
#[derive(Debug, Default)]
pub(crate) struct JobPoller {
    book: Mutex<Book>,
    wake: Notify,
}

impl JobPoller {
    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True while the poller task runs (tests).
    #[cfg(test)]
    pub(crate) fn lock_running(&self) -> bool {
        self.lock().running
    }
}

impl QingCloudClient {
    /// Registers a wait for `job` with the shared poller (started if idle).
    fn poll_job(&self, job: &JobId) -> oneshot::Receiver<Answer> {
        let (tx, rx) = oneshot::channel();
        let initial = self.options().job_poll_initial;
        let poller = self.job_poller();
        let start = {
            let mut book = poller.lock();
            let due = Instant::now() + initial;
            let entry = book.jobs.entry(job.clone()).or_insert(Waiting {
                listeners: Vec::new(),
                due,
                polls: 0,
            });
            entry.listeners.push(tx);
            entry.due = entry.due.min(due);
            !std::mem::replace(&mut book.running, true)
        };
        if start {
            tokio::spawn(self.clone().run_poller());
        } else {
            poller.wake.notify_one();
        }
        rx
    }

    async fn run_poller(self) {
        let poller = self.job_poller();
        loop {
            // The earliest due job, after dropping jobs nobody listens to any more.
            let due = {
                let mut book = poller.lock();
                book.jobs.retain(|_, w| {
                    w.listeners.retain(|l| !l.is_closed());
                    !w.listeners.is_empty()
                });
                match book.jobs.values().map(|w| w.due).min() {
                    Some(due) => due,
                    None => {
                        book.running = false;
                        return;
                    }
                }
            };
            tokio::select! {
                _ = tokio::time::sleep_until(due) => {}
                // A new job may be due earlier (or a waiter left): look again.
                _ = poller.wake.notified() => continue,
            }
            let ids: Vec<JobId> = poller.lock().jobs.keys().cloned().collect();
            let result = self.job_statuses(&ids).await;
            let now = Instant::now();
            let options = self.options();
            let backoff = ExponentialBackoff::new(options.job_poll_initial, options.job_poll_max);
            let mut book = poller.lock();
            for id in &ids {
                let Some(waiting) = book.jobs.get_mut(id) else {
                    continue;
                };
                let answer: Option<Answer> = match &result {
                    Ok(statuses) => match statuses.get(id) {
                        Some(s @ (JobStatus::Successful | JobStatus::Failed)) => Some(Ok(*s)),
                        Some(JobStatus::Pending | JobStatus::Working) => None,
                        None => Some(Err(CloudError::new(
                            CloudErrorKind::NotFound,
                            "DescribeJobs",
                            format!("job {id} not found"),
                        ))),
                    },
                    // A transient failure of one poll is not a failure of the jobs.
                    Err(e) if e.is_retryable() => {
                        tracing::debug!(error = %e, jobs = ids.len(), "job poll failed");
                        None
                    }
                    Err(e) => Some(Err(e.clone())),
                };
                match answer {
                    Some(answer) => {
                        if let Some(waiting) = book.jobs.remove(id) {
                            for l in waiting.listeners {
                                let _ = l.send(answer.clone());
                            }
                        }
                    }
                    None => {
                        waiting.polls = waiting.polls.saturating_add(1);
                        let delay = backoff.delay(waiting.polls).max(Duration::from_millis(1));
                        waiting.due = now + delay;
                    }
                }
            }
        }
    }
}

/// The outcome of a wait: the job's final status, or why there is none.
pub(crate) async fn wait(
    client: &QingCloudClient,
    job: &JobId,
    timeout: Duration,
) -> Result<JobStatus, CloudError> {
    let rx = client.poll_job(job);
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(_)) => Err(CloudError::new(
            CloudErrorKind::Retryable,
            "DescribeJobs",
            format!("the job poller stopped before job {job} finished"),
        )),
        Err(_) => Err(CloudError::new(
            CloudErrorKind::Retryable,
            "DescribeJobs",
            format!("job {job} still running after {timeout:?}"),
        )),
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JobStatus::Pending => "pending",
            JobStatus::Working => "working",
            JobStatus::Successful => "successful",
            JobStatus::Failed => "failed",
        })
    }
}

pub(crate) type SharedPoller = Arc<JobPoller>;
