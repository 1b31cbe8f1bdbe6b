//! A small fake Kubernetes API server on loopback, for tests and the lab.
//!
//! It serves, over plain HTTP, the kinds in [`store::KINDS`] (pods, nodes, namespaces,
//! events in both groups, networkpolicies): list and watch (with `fieldSelector`,
//! `labelSelector`, `resourceVersion`, `timeoutSeconds`, `allowWatchBookmarks`: a
//! BOOKMARK for every write the watch does not carry), get, create, replace, merge
//! patch (merge, strategic-merge and apply patches are all applied as JSON merge
//! patches) and delete. Tests edit the cluster directly ([`FakeApiServer::apply`],
//! [`FakeApiServer::delete`], …), read back what clients did
//! ([`FakeApiServer::requests`]), and simulate outages
//! ([`FakeApiServer::set_available`]) and compaction ([`FakeApiServer::compact`]).
//! [`FakeApiServer::write_kubeconfig`] writes a kubeconfig for real clients.
//!
//! It also serves API discovery (`/version`, `/api`, `/apis`, the group/version
//! resource lists) for every kind it serves, so `kubectl` can get, describe,
//! apply (`--validate=false`: no OpenAPI), delete and watch them, and answers
//! `kubectl get`'s request for a server-side table with a table of names and
//! ages. More kinds can be served at run time ([`FakeApiServer::serve_kind`]):
//! they appear in discovery too.
//!
//! Custom resources work as on a real API server (`custom.rs`): writing a
//! `CustomResourceDefinition` serves its kinds (and puts them in discovery), with
//! the `status` subresource, `metadata.generation` bumped on spec changes only,
//! and `kubectl get` tables from its printer columns. Every write that names a
//! `metadata.resourceVersion` other than the stored one answers 409 Conflict
//! (optimistic concurrency, for Leases and every other kind). Leases
//! (`coordination.k8s.io/v1`) are served.
//!
//! Not a real API server: no admission, no schema validation, no server-side
//! apply field ownership (apply patches are merge patches), no pagination
//! (everything fits in one page).
//!
//! # Layout
//! - `store.rs` — objects, resource versions and the change log, for any kind.
//! - `selector.rs` — field and label selectors on JSON.
//! - `http.rs` — routing of Kubernetes REST paths onto the store, watch streaming.
//! - `discovery.rs` — `/api`, `/apis` and the resource lists, from the served kinds.
//! - `custom.rs` — CRDs, the status subresource, generations, conflicts, tables.

pub mod custom;
mod discovery;
mod http;
pub mod selector;
pub mod store;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use store::{Change, Store, StoreError};

/// The bearer token the generated kubeconfig carries; the server accepts any request
/// with it or without authentication, and rejects other tokens with 401.
pub const TOKEN: &str = "hostnic-fake-token";

/// A request the server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Query string, percent-decoded (`""` if none).
    pub query: String,
}

/// State shared by the server task and the handle.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) store: Mutex<Store>,
    pub(crate) changes: broadcast::Sender<Change>,
    /// Bumped to end every open watch (outage, explicit disconnect).
    pub(crate) epoch: watch::Sender<u64>,
    pub(crate) available: std::sync::atomic::AtomicBool,
    pub(crate) requests: Mutex<Vec<RecordedRequest>>,
    /// The kinds served: [`store::KINDS`] and those added by [`FakeApiServer::serve_kind`].
    pub(crate) kinds: std::sync::RwLock<Vec<&'static store::Kind>>,
    /// Kinds served from CustomResourceDefinitions, by (apiVersion, plural).
    pub(crate) custom: std::sync::RwLock<BTreeMap<(&'static str, &'static str), custom::Custom>>,
}

impl Shared {
    pub(crate) fn new() -> Self {
        Self {
            store: Mutex::new(Store::default()),
            changes: broadcast::channel(4096).0,
            epoch: watch::channel(0).0,
            available: std::sync::atomic::AtomicBool::new(true),
            requests: Mutex::new(Vec::new()),
            kinds: std::sync::RwLock::new(store::KINDS.iter().collect()),
            custom: std::sync::RwLock::new(BTreeMap::new()),
        }
    }

    /// The behaviour of a kind served from a CRD.
    pub(crate) fn custom(&self, kind: &store::Kind) -> Option<custom::Custom> {
        self.custom
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(kind.api_version, kind.plural))
            .cloned()
    }

    /// Adds `kind` to the served kinds (once).
    pub(crate) fn serve(&self, kind: &'static store::Kind) {
        let mut kinds = self.kinds.write().unwrap_or_else(|p| p.into_inner());
        if !kinds
            .iter()
            .any(|k| k.api_version == kind.api_version && k.plural == kind.plural)
        {
            kinds.push(kind);
        }
    }

    /// The kinds a CRD defines, validated, reusing kinds served already.
    pub(crate) fn crd_kinds(
        &self,
        crd: &Value,
    ) -> Result<Vec<(&'static store::Kind, custom::Custom)>, StoreError> {
        custom::crd_kinds(crd, |v, p| self.kind_by_plural(v, p))
    }

    /// Serves the kinds of a CRD that was just written.
    pub(crate) fn crd_written(&self, kinds: Vec<(&'static store::Kind, custom::Custom)>) {
        for (kind, c) in kinds {
            self.serve(kind);
            self.custom
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert((kind.api_version, kind.plural), c);
        }
    }

    /// Stops serving the kinds of a deleted CRD and deletes their objects, as the
    /// API server does.
    pub(crate) fn crd_deleted(&self, name: &str) {
        let gone: Vec<(&'static str, &'static str)> = {
            let mut custom = self.custom.write().unwrap_or_else(|p| p.into_inner());
            let gone: Vec<_> = custom
                .iter()
                .filter(|(_, c)| c.crd == name)
                .map(|(k, _)| *k)
                .collect();
            for k in &gone {
                custom.remove(k);
            }
            gone
        };
        for (api_version, plural) in gone {
            let Some(kind) = self.kind_by_plural(api_version, plural) else {
                continue;
            };
            let objects = self.store().list(kind, None);
            for obj in objects {
                let ns = obj
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let name = obj
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let _ = self.write(|s| s.delete(kind, &ns, &name));
            }
            self.kinds
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|k| !(k.api_version == api_version && k.plural == plural));
        }
    }

    /// Every kind served, built-in first.
    pub(crate) fn kinds(&self) -> Vec<&'static store::Kind> {
        self.kinds.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The kind served at `api_version` + `plural`.
    pub(crate) fn kind_by_plural(
        &self,
        api_version: &str,
        plural: &str,
    ) -> Option<&'static store::Kind> {
        self.kinds()
            .into_iter()
            .find(|k| k.api_version == api_version && k.plural == plural)
    }

    /// The kind of objects with this `apiVersion` and `kind`.
    pub(crate) fn lookup(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<&'static store::Kind, StoreError> {
        self.kinds()
            .into_iter()
            .find(|k| k.api_version == api_version && k.kind == kind)
            .ok_or_else(|| StoreError {
                code: 404,
                reason: "NotFound",
                message: format!("the server does not serve {api_version} {kind}"),
            })
    }

    pub(crate) fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a store write and publishes its change while the store is locked, so that
    /// watchers see changes in resource-version order.
    pub(crate) fn write(
        &self,
        f: impl FnOnce(&mut Store) -> Result<(Value, Change), StoreError>,
    ) -> Result<Value, StoreError> {
        let mut store = self.store();
        let (obj, change) = f(&mut store)?;
        let _ = self.changes.send(change);
        Ok(obj)
    }
}

/// The fake API server: serves until dropped.
#[derive(Debug)]
pub struct FakeApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FakeApiServer {
    /// Starts a server on `127.0.0.1` on a free port.
    pub async fn start() -> std::io::Result<Self> {
        Self::bind("127.0.0.1:0".parse().expect("valid address")).await
    }

    /// Starts a server on `addr` (keep it on loopback or in a test namespace).
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new());
        let task = tokio::spawn(http::serve(listener, shared.clone()));
        Ok(Self { addr, shared, task })
    }

    /// The address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig for this server (plain HTTP, bearer token [`TOKEN`]).
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             users:\n- name: fake\n  user:\n    token: {TOKEN}\ncontexts:\n- name: fake\n  \
             context:\n    cluster: fake\n    user: fake\n    namespace: default\n\
             current-context: fake\n",
            self.url()
        )
    }

    /// Writes [`kubeconfig_yaml`](Self::kubeconfig_yaml) to `dir/kubeconfig`; returns the path.
    pub fn write_kubeconfig(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let path = dir.join("kubeconfig");
        std::fs::write(&path, self.kubeconfig_yaml())?;
        Ok(path)
    }

    /// Creates or replaces an object; its `apiVersion` and `kind` must be served.
    /// A direct edit of the store (no precondition, no subresource rule), except
    /// that a CustomResourceDefinition is checked, marked established and makes
    /// its kinds served, as on a real API server.
    pub fn apply(&self, obj: Value) -> Result<Value, StoreError> {
        let field = |f: &str| obj.get(f).and_then(Value::as_str).unwrap_or_default();
        let kind = self.shared.lookup(field("apiVersion"), field("kind"))?;
        let ns = namespace_of(kind, &obj);
        if kind == store::crd_kind() {
            let kinds = self.shared.crd_kinds(&obj)?;
            let stored = self
                .shared
                .write(|s| s.apply(kind, &ns, custom::established(obj)))?;
            self.shared.crd_written(kinds);
            return Ok(stored);
        }
        self.shared.write(|s| s.apply(kind, &ns, obj))
    }

    /// Installs a CustomResourceDefinition given as YAML (e.g. `deploy/crd.yaml`).
    pub fn install_crd_yaml(&self, yaml: &str) -> Result<Value, StoreError> {
        let crd: Value = serde_yaml::from_str(yaml).map_err(|e| StoreError {
            code: 400,
            reason: "BadRequest",
            message: e.to_string(),
        })?;
        self.apply(crd)
    }

    /// Merge-patches an existing object.
    pub fn patch(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
        patch: &Value,
    ) -> Result<Value, StoreError> {
        let kind = self.shared.lookup(api_version, kind)?;
        self.shared
            .write(|s| s.merge_patch(kind, namespace, name, patch))
    }

    /// Deletes an object (`namespace` is ignored for cluster-scoped kinds); returns its
    /// last state with `metadata.resourceVersion` set to the deletion's version.
    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Value, StoreError> {
        let kind = self.shared.lookup(api_version, kind)?;
        let last = self.shared.write(|s| s.delete(kind, namespace, name))?;
        if kind == store::crd_kind() {
            self.shared.crd_deleted(name);
        }
        Ok(last)
    }

    /// One object, if it exists.
    pub fn get(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let kind = self.shared.lookup(api_version, kind).ok()?;
        self.shared.store().get(kind, namespace, name).ok()
    }

    /// All objects of a kind.
    pub fn list(&self, api_version: &str, kind: &str) -> Vec<Value> {
        self.shared
            .lookup(api_version, kind)
            .map(|k| self.shared.store().list(k, None))
            .unwrap_or_default()
    }

    /// Serves `kind` from now on (list, watch, get, create, replace, patch,
    /// delete, and in discovery), e.g. a CustomResourceDefinition's kind or
    /// `coordination.k8s.io/v1` Leases. Serving a kind twice changes nothing.
    pub fn serve_kind(&self, kind: &'static store::Kind) {
        self.shared.serve(kind);
    }

    /// Adds a Node with `annotations`.
    pub fn add_node(&self, name: &str, annotations: &[(&str, &str)]) -> Value {
        let annotations: serde_json::Map<String, Value> = annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        self.apply(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": annotations},
        }))
        .expect("nodes are served")
    }

    /// Adds (or replaces) a pod bound to `node` (unbound if empty), with `ip` if given.
    pub fn add_pod(&self, namespace: &str, name: &str, node: &str, ip: Option<&str>) -> Value {
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"containers": [{"name": "c", "image": "pause"}]},
            "status": {"phase": if ip.is_some() { "Running" } else { "Pending" }},
        });
        if !node.is_empty() {
            pod["spec"]["nodeName"] = json!(node);
        }
        if let Some(ip) = ip {
            pod["status"]["podIP"] = json!(ip);
        }
        self.apply(pod).expect("pods are served")
    }

    /// Deletes a pod.
    pub fn delete_pod(&self, namespace: &str, name: &str) -> Result<Value, StoreError> {
        self.delete("v1", "Pod", namespace, name)
    }

    /// Events recorded by clients (both the core and the events.k8s.io group).
    pub fn events(&self) -> Vec<Value> {
        let mut all = self.list("v1", "Event");
        all.extend(self.list("events.k8s.io/v1", "Event"));
        all
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Makes the server answer 503 to everything (false) and ends open watches, or serve
    /// again (true).
    pub fn set_available(&self, available: bool) {
        self.shared
            .available
            .store(available, std::sync::atomic::Ordering::SeqCst);
        if !available {
            self.disconnect_watches();
        }
    }

    /// Ends every open watch (clients reconnect from their last resource version).
    pub fn disconnect_watches(&self) {
        self.shared.epoch.send_modify(|e| *e += 1);
    }

    /// Forgets the change log: watches resuming from an older resource version get
    /// `410 Gone` and must list again.
    pub fn compact(&self) {
        self.shared.store().compact();
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.disconnect_watches();
        self.task.abort();
    }
}

fn namespace_of(kind: &store::Kind, obj: &Value) -> String {
    if !kind.namespaced {
        return String::new();
    }
    obj.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
        .to_owned()
}
