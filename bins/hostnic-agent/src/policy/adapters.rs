//! The policy traits for the production adapters.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use hostnic_core::policy::{ClusterView, CompiledPolicy, PolicyPod};
use hostnic_k8s::KubePolicySource;
use hostnic_linux::policy::{LocalPod, PolicyRenderer};
use tokio::sync::watch;

use super::{PolicyDataplane, PolicyDataplaneError, PolicySource, PolicySourceError, Programmed};

#[async_trait]
impl PolicySource for KubePolicySource {
    fn is_synced(&self) -> bool {
        KubePolicySource::is_synced(self)
    }

    fn view(&self) -> Arc<ClusterView> {
        KubePolicySource::view(self)
    }

    fn take_view(&self) -> (Arc<ClusterView>, Option<Instant>) {
        KubePolicySource::take_view(self)
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        KubePolicySource::subscribe(self)
    }

    fn cached_pod(&self, namespace: &str, name: &str) -> Option<PolicyPod> {
        KubePolicySource::cached_pod(self, namespace, name)
    }

    async fn pod(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<PolicyPod>, PolicySourceError> {
        KubePolicySource::pod(self, namespace, name)
            .await
            .map_err(|e| PolicySourceError {
                message: e.to_string(),
            })
    }
}

#[async_trait]
impl PolicyDataplane for PolicyRenderer {
    async fn sync(
        &mut self,
        compiled: &CompiledPolicy,
        local: &[LocalPod],
    ) -> Result<Programmed, PolicyDataplaneError> {
        let stats = PolicyRenderer::sync(self, compiled, local)
            .await
            .map_err(|e| PolicyDataplaneError(e.to_string()))?;
        let (rules, elements) = self
            .programmed()
            .map(|p| (p.rule_count(), p.element_count()))
            .unwrap_or_default();
        Ok(Programmed {
            stats,
            rules,
            elements,
        })
    }
}
