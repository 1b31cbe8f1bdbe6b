use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::channel::mpsc;
use futures::stream::{BoxStream, StreamExt};

use crate::ports::{PodSource, PodSourceError};
use crate::types::{PodEvent, PodInfo};

#[derive(Debug, Default)]
struct Inner {
    pods: Vec<PodInfo>,
    subscribers: Vec<mpsc::UnboundedSender<PodEvent>>,
    fail_next: u32,
}

/// A pod source backed by a list the test edits; every edit is also sent to the
/// change streams.
#[derive(Debug, Clone, Default)]
pub struct FakePods(Arc<Mutex<Inner>>);

impl FakePods {
    /// An empty source.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a pod.
    pub fn upsert(&self, pod: PodInfo) {
        let mut inner = self.0.lock().unwrap();
        inner
            .pods
            .retain(|p| !(p.namespace == pod.namespace && p.name == pod.name));
        inner.pods.push(pod.clone());
        inner
            .subscribers
            .retain(|s| s.unbounded_send(PodEvent::Upserted(pod.clone())).is_ok());
    }

    /// Removes a pod.
    pub fn delete(&self, namespace: &str, name: &str) {
        let mut inner = self.0.lock().unwrap();
        inner
            .pods
            .retain(|p| !(p.namespace == namespace && p.name == name));
        let event = PodEvent::Deleted {
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        inner
            .subscribers
            .retain(|s| s.unbounded_send(event.clone()).is_ok());
    }

    /// The next `n` listings fail as if the API server were unreachable.
    pub fn fail_next(&self, n: u32) {
        self.0.lock().unwrap().fail_next = n;
    }
}

#[async_trait]
impl PodSource for FakePods {
    async fn pods(&self) -> Result<Vec<PodInfo>, PodSourceError> {
        let mut inner = self.0.lock().unwrap();
        if inner.fail_next > 0 {
            inner.fail_next -= 1;
            return Err(PodSourceError {
                retryable: true,
                message: "injected: API server unreachable".into(),
            });
        }
        Ok(inner.pods.clone())
    }

    fn changes(&self) -> BoxStream<'static, PodEvent> {
        let (tx, rx) = mpsc::unbounded();
        self.0.lock().unwrap().subscribers.push(tx);
        rx.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_streamed_and_listing_can_fail() {
        let pods = FakePods::new();
        let mut stream = pods.changes();
        let pod = PodInfo {
            namespace: "a".into(),
            name: "b".into(),
            pending: true,
            ip: None,
        };
        pods.upsert(pod.clone());
        pods.delete("a", "b");
        futures::executor::block_on(async {
            assert_eq!(stream.next().await, Some(PodEvent::Upserted(pod)));
            assert!(matches!(
                stream.next().await,
                Some(PodEvent::Deleted { .. })
            ));
            pods.fail_next(1);
            assert!(pods.pods().await.unwrap_err().retryable);
            assert!(pods.pods().await.unwrap().is_empty());
        });
    }
}
