//! [`StaticPods`]: the pods that should exist on a node, listed in a file, for
//! a node without an API server (`hostnic-agent --pods static:FILE`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use hostnic_core::ports::{PodSource, PodSourceError};
use hostnic_core::types::{PodEvent, PodInfo};

/// Pods listed in a file (JSON or YAML, a list of [`PodInfo`]). The file is read
/// on every [`PodSource::pods`] call, so edits take effect at the next reconcile;
/// [`PodSource::changes`] polls it every few seconds and reports differences.
#[derive(Debug, Clone)]
pub struct StaticPods {
    path: PathBuf,
    poll: Duration,
}

impl StaticPods {
    /// A source reading `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            poll: Duration::from_secs(2),
        }
    }
}

fn read_pods(path: &Path) -> Result<Vec<PodInfo>, PodSourceError> {
    let text = std::fs::read_to_string(path).map_err(|e| PodSourceError {
        retryable: true,
        message: format!("reading {}: {e}", path.display()),
    })?;
    // YAML is a superset of JSON.
    serde_yaml::from_str::<Option<Vec<PodInfo>>>(&text)
        .map(Option::unwrap_or_default)
        .map_err(|e| PodSourceError {
            retryable: false,
            message: format!("{}: {e}", path.display()),
        })
}

#[async_trait]
impl PodSource for StaticPods {
    async fn pods(&self) -> Result<Vec<PodInfo>, PodSourceError> {
        read_pods(&self.path)
    }

    fn changes(&self) -> BoxStream<'static, PodEvent> {
        let path = self.path.clone();
        let poll = self.poll;
        let first = read_pods(&path).unwrap_or_default();
        futures::stream::unfold((path, first), move |(path, last)| async move {
            loop {
                tokio::time::sleep(poll).await;
                let Ok(now) = read_pods(&path) else { continue };
                let mut events: Vec<PodEvent> = now
                    .iter()
                    .filter(|p| !last.contains(p))
                    .cloned()
                    .map(PodEvent::Upserted)
                    .collect();
                events.extend(
                    last.iter()
                        .filter(|p| {
                            !now.iter()
                                .any(|n| n.namespace == p.namespace && n.name == p.name)
                        })
                        .map(|p| PodEvent::Deleted {
                            namespace: p.namespace.clone(),
                            name: p.name.clone(),
                        }),
                );
                if !events.is_empty() {
                    return Some((futures::stream::iter(events), (path, now)));
                }
            }
        })
        .flatten()
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn static_file_is_read_as_yaml_or_json() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pods.yaml");
        std::fs::write(&path, "- {namespace: default, name: web, pending: true}\n").unwrap();
        let source = StaticPods::new(&path);
        let pods = source.pods().await.unwrap();
        assert_eq!(pods.len(), 1);
        assert!(pods[0].pending);
        std::fs::write(&path, r#"[{"namespace":"a","name":"b","pending":false}]"#).unwrap();
        assert_eq!(source.pods().await.unwrap()[0].name, "b");
        std::fs::write(&path, "").unwrap();
        assert!(source.pods().await.unwrap().is_empty());
    }
}
