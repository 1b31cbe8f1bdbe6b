//! The policy traits for the production adapters.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use hostnic_core::policy::{ClusterView, CompiledPolicy, PolicyPod};
use hostnic_k8s::KubePolicySource;
use hostnic_linux::NetNs;
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

/// The nftables renderer as the agent's dataplane. [`PolicyDataplane::forget`]
/// starts a fresh renderer, whose first sync reads what the kernel really has and
/// replaces it (healing a table someone else changed).
#[derive(Debug)]
pub struct NftPolicy {
    ns: Option<NetNs>,
    nft: String,
    renderer: PolicyRenderer,
}

impl NftPolicy {
    /// Programs the `hostnic` table in `ns` (the current namespace if `None`) with
    /// the `nft` binary `nft`.
    pub fn new(ns: Option<NetNs>, nft: impl Into<String>) -> Self {
        let nft = nft.into();
        Self {
            renderer: PolicyRenderer::new(ns.clone(), nft.clone()),
            ns,
            nft,
        }
    }
}

#[async_trait]
impl PolicyDataplane for NftPolicy {
    async fn sync(
        &mut self,
        compiled: &CompiledPolicy,
        local: &[LocalPod],
    ) -> Result<Programmed, PolicyDataplaneError> {
        let stats = self
            .renderer
            .sync(compiled, local)
            .await
            .map_err(|e| PolicyDataplaneError(e.to_string()))?;
        let (rules, elements) = self
            .renderer
            .programmed()
            .map(|p| (p.rule_count(), p.element_count()))
            .unwrap_or_default();
        Ok(Programmed {
            stats,
            rules,
            elements,
        })
    }

    fn forget(&mut self) {
        self.renderer = PolicyRenderer::new(self.ns.clone(), self.nft.clone());
    }
}
