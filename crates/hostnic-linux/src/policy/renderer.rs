//! [`PolicyRenderer`]: keeps the policy objects of the `hostnic` table in step
//! with a [`CompiledPolicy`], one `nft -j -f -` transaction per sync; the
//! core's [`PolicyDataplane`] port.

use hostnic_core::policy::CompiledPolicy;
use serde_json::Value;

use async_trait::async_trait;
use hostnic_core::policy::{LocalPod, ProgramStats, Programmed};
use hostnic_core::ports::{PolicyDataplane, PolicyDataplaneError};

use super::diff::{self, Existing};
use super::ruleset::{POLICY_CHAIN, PolicyRuleset, is_policy_object};
use crate::error::LinuxError;
use crate::netns::NetNs;
use crate::node::NFT_TABLE;

/// Programs NetworkPolicy into table `inet hostnic`, incrementally.
///
/// The first sync (and the first after a failed one) reads which policy objects
/// the kernel has, and replaces them all in one transaction; later syncs send
/// only the difference to what the last successful sync programmed. Nothing
/// outside the policy objects of table `hostnic` is touched.
#[derive(Debug)]
pub struct PolicyRenderer {
    ns: Option<NetNs>,
    nft: String,
    programmed: Option<PolicyRuleset>,
}

impl PolicyRenderer {
    /// A renderer running `nft` (the binary `nft_binary`) in `ns`, or in the
    /// current namespace when `None`.
    pub fn new(ns: Option<NetNs>, nft_binary: impl Into<String>) -> Self {
        Self {
            ns,
            nft: nft_binary.into(),
            programmed: None,
        }
    }

    /// What the last successful sync programmed.
    pub fn programmed(&self) -> Option<&PolicyRuleset> {
        self.programmed.as_ref()
    }

    /// Makes the kernel enforce `compiled` for the `local` pods. Blocks on `nft`.
    pub fn sync_blocking(
        &mut self,
        compiled: &CompiledPolicy,
        local: &[LocalPod],
    ) -> Result<ProgramStats, LinuxError> {
        let desired = PolicyRuleset::build(compiled, local);
        self.apply_blocking(desired)
    }

    /// Makes the kernel hold exactly `desired` (see [`PolicyRuleset::build`]).
    pub fn apply_blocking(&mut self, desired: PolicyRuleset) -> Result<ProgramStats, LinuxError> {
        let tx = match &self.programmed {
            Some(old) => diff::incremental(old, &desired),
            None => diff::full(&self.existing_blocking()?, &desired),
        };
        let (ruleset, stats) = tx.finish();
        // Until this transaction is known to have committed, assume nothing.
        self.programmed = None;
        if stats.commands > 0 {
            self.nft_blocking(&["-j", "-f", "-"], Some(&ruleset))?;
        }
        tracing::debug!(?stats, "network policy synced");
        self.programmed = Some(desired);
        Ok(stats)
    }

    /// Async form of [`PolicyRenderer::sync_blocking`]: `nft` runs on a thread
    /// of its own.
    pub async fn sync(
        &mut self,
        compiled: &CompiledPolicy,
        local: &[LocalPod],
    ) -> Result<ProgramStats, LinuxError> {
        let desired = PolicyRuleset::build(compiled, local);
        let mut worker = PolicyRenderer {
            ns: self.ns.clone(),
            nft: self.nft.clone(),
            programmed: self.programmed.take(),
        };
        let (worker, result) = tokio::task::spawn_blocking(move || {
            let result = worker.apply_blocking(desired);
            (worker, result)
        })
        .await
        .map_err(|e| LinuxError::Nftables(format!("policy sync worker: {e}")))?;
        self.programmed = worker.programmed;
        result
    }

    /// Removes every policy object (base chain, maps, pod chains, sets).
    pub fn remove_all_blocking(&mut self) -> Result<(), LinuxError> {
        let existing = self.existing_blocking()?;
        self.programmed = None;
        let (ruleset, _) = diff::teardown(&existing).finish();
        self.nft_blocking(&["-j", "-f", "-"], Some(&ruleset))?;
        Ok(())
    }

    /// Async form of [`PolicyRenderer::remove_all_blocking`] (for an agent whose
    /// enforcement is off: chains an earlier run programmed must not keep
    /// isolating pods nobody enforces policy for any more).
    pub async fn remove_all(mut self) -> Result<(), LinuxError> {
        tokio::task::spawn_blocking(move || self.remove_all_blocking())
            .await
            .map_err(|e| LinuxError::Nftables(format!("policy removal worker: {e}")))?
    }

    /// Policy chains and sets currently in the kernel's `hostnic` table.
    fn existing_blocking(&self) -> Result<Existing, LinuxError> {
        let listing = match self.nft_blocking(&["-j", "list", "table", "inet", NFT_TABLE], None) {
            Ok(out) => out,
            // No table yet: nothing of ours exists.
            Err(LinuxError::Nftables(e)) if e.contains("No such file or directory") => {
                return Ok(Existing::default());
            }
            Err(e) => return Err(e),
        };
        Ok(parse_existing(&listing))
    }

    fn nft_blocking(&self, args: &[&str], stdin: Option<&Value>) -> Result<String, LinuxError> {
        let input = stdin.map(|v| v.to_string());
        let work = || crate::nft::run(&self.nft, args, input.as_deref());
        match &self.ns {
            Some(ns) => ns.run_blocking(work)?,
            None => work(),
        }
    }
}

/// Policy chains (not the base chain) and sets named in `nft -j list table` output.
fn parse_existing(listing: &str) -> Existing {
    let mut existing = Existing::default();
    let Ok(v) = serde_json::from_str::<Value>(listing) else {
        return existing;
    };
    for item in v["nftables"].as_array().into_iter().flatten() {
        for (kind, target) in [("chain", &mut existing.chains), ("set", &mut existing.sets)] {
            if let Some(name) = item[kind]["name"].as_str()
                && item[kind]["table"] == NFT_TABLE
                && is_policy_object(name)
                && name != POLICY_CHAIN
            {
                target.insert(name.to_string());
            }
        }
    }
    existing
}

/// The core's policy dataplane: [`PolicyDataplane::forget`] drops what the
/// renderer believes is programmed, so its next sync reads what the kernel
/// really has and replaces it (healing a table someone else changed).
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

    fn forget(&mut self) {
        self.programmed = None;
    }
}
