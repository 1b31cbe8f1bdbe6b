//! The fake server's objects, resource versions and change log, for any resource kind
//! listed in [`KINDS`].

use std::collections::{BTreeMap, VecDeque};

use serde_json::{Map, Value, json};

/// A resource kind the fake server knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// `v1` for the core group, else `group/version`.
    pub api_version: &'static str,
    /// The URL plural, e.g. `pods`.
    pub plural: &'static str,
    /// The object kind, e.g. `Pod`.
    pub kind: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
}

/// Everything served. Adding a kind here is all it takes to serve it (list, watch, get,
/// create, replace, patch, delete).
pub const KINDS: &[Kind] = &[
    Kind {
        api_version: "v1",
        plural: "pods",
        kind: "Pod",
        namespaced: true,
    },
    Kind {
        api_version: "v1",
        plural: "nodes",
        kind: "Node",
        namespaced: false,
    },
    Kind {
        api_version: "v1",
        plural: "namespaces",
        kind: "Namespace",
        namespaced: false,
    },
    Kind {
        api_version: "v1",
        plural: "events",
        kind: "Event",
        namespaced: true,
    },
    Kind {
        api_version: "events.k8s.io/v1",
        plural: "events",
        kind: "Event",
        namespaced: true,
    },
    Kind {
        api_version: "networking.k8s.io/v1",
        plural: "networkpolicies",
        kind: "NetworkPolicy",
        namespaced: true,
    },
    Kind {
        api_version: "coordination.k8s.io/v1",
        plural: "leases",
        kind: "Lease",
        namespaced: true,
    },
    Kind {
        api_version: "apiextensions.k8s.io/v1",
        plural: "customresourcedefinitions",
        kind: "CustomResourceDefinition",
        namespaced: false,
    },
];

/// The kind of CustomResourceDefinitions: writing one serves the kinds it defines.
pub fn crd_kind() -> &'static Kind {
    kind_by_plural("apiextensions.k8s.io/v1", "customresourcedefinitions").expect("in KINDS")
}

/// The kind served at `api_version` + `plural`.
pub fn kind_by_plural(api_version: &str, plural: &str) -> Option<&'static Kind> {
    KINDS
        .iter()
        .find(|k| k.api_version == api_version && k.plural == plural)
}

/// The kind of an object with this `apiVersion` and `kind`.
pub fn kind_by_name(api_version: &str, kind: &str) -> Option<&'static Kind> {
    KINDS
        .iter()
        .find(|k| k.api_version == api_version && k.kind == kind)
}

/// One change, as kept in the log that watches replay from.
#[derive(Debug, Clone)]
pub struct Change {
    /// The resource version the change produced.
    pub rv: u64,
    /// The kind of the object.
    pub kind: &'static Kind,
    /// The object before (None when created).
    pub old: Option<Value>,
    /// The object after (None when deleted).
    pub new: Option<Value>,
}

/// Why a store operation failed, as an HTTP status and a reason.
#[derive(Debug, Clone)]
pub struct StoreError {
    /// HTTP status code.
    pub code: u16,
    /// Kubernetes reason, e.g. `NotFound`.
    pub reason: &'static str,
    /// Message.
    pub message: String,
}

impl StoreError {
    fn not_found(kind: &Kind, name: &str) -> Self {
        Self {
            code: 404,
            reason: "NotFound",
            message: format!("{} \"{name}\" not found", kind.plural),
        }
    }
}

type Key = (&'static str, &'static str, String, String);

/// Objects keyed by (apiVersion, plural, namespace, name), with a global resource version.
#[derive(Debug, Default)]
pub struct Store {
    rv: u64,
    uids: u64,
    objects: BTreeMap<Key, Value>,
    log: VecDeque<Change>,
    /// Changes with `rv <= compacted` are gone from the log: older watches get 410.
    compacted: u64,
}

/// Changes kept for watches to resume from.
const LOG_LIMIT: usize = 10_000;

impl Store {
    /// The current resource version.
    pub fn rv(&self) -> u64 {
        self.rv
    }

    /// The oldest resource version a watch may resume from.
    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    /// Forgets the change log: watches resuming from before now get 410 Gone.
    pub fn compact(&mut self) {
        self.log.clear();
        self.compacted = self.rv;
    }

    /// The objects of `kind` (in `namespace`, if given).
    pub fn list(&self, kind: &Kind, namespace: Option<&str>) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((v, p, ns, _), _)| {
                *v == kind.api_version && *p == kind.plural && namespace.is_none_or(|n| n == ns)
            })
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// One object.
    pub fn get(&self, kind: &Kind, namespace: &str, name: &str) -> Result<Value, StoreError> {
        self.objects
            .get(&key(kind, namespace, name))
            .cloned()
            .ok_or_else(|| StoreError::not_found(kind, name))
    }

    /// Changes after `rv`, in order.
    pub fn changes_after(&self, rv: u64) -> Vec<Change> {
        self.log.iter().filter(|c| c.rv > rv).cloned().collect()
    }

    /// Creates `obj` (409 if it exists); fills in name from `generateName`, namespace,
    /// uid, creationTimestamp and resourceVersion. Returns the stored object and change.
    pub fn create(
        &mut self,
        kind: &'static Kind,
        namespace: &str,
        mut obj: Value,
    ) -> Result<(Value, Change), StoreError> {
        let meta = metadata(&mut obj);
        if meta
            .get("name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            let prefix = meta
                .get("generateName")
                .and_then(Value::as_str)
                .ok_or_else(|| StoreError {
                    code: 422,
                    reason: "Invalid",
                    message: "metadata.name or metadata.generateName is required".into(),
                })?
                .to_owned();
            self.uids += 1;
            meta.insert("name".into(), json!(format!("{prefix}{:05x}", self.uids)));
        }
        let name = meta["name"].as_str().unwrap_or_default().to_owned();
        if self.objects.contains_key(&key(kind, namespace, &name)) {
            return Err(StoreError {
                code: 409,
                reason: "AlreadyExists",
                message: format!("{} \"{name}\" already exists", kind.plural),
            });
        }
        self.uids += 1;
        meta.insert("uid".into(), json!(format!("fake-uid-{:08}", self.uids)));
        meta.entry("creationTimestamp")
            .or_insert(json!(now_rfc3339()));
        Ok(self.put(kind, namespace, &name, obj))
    }

    /// Replaces an existing object (keeps its uid).
    pub fn replace(
        &mut self,
        kind: &'static Kind,
        namespace: &str,
        name: &str,
        mut obj: Value,
    ) -> Result<(Value, Change), StoreError> {
        let old = self.get(kind, namespace, name)?;
        let meta = metadata(&mut obj);
        meta.insert("name".into(), json!(name));
        for k in ["uid", "creationTimestamp"] {
            if let Some(v) = old.pointer(&format!("/metadata/{k}")) {
                meta.insert(k.into(), v.clone());
            }
        }
        Ok(self.put(kind, namespace, name, obj))
    }

    /// Creates or replaces.
    pub fn apply(
        &mut self,
        kind: &'static Kind,
        namespace: &str,
        obj: Value,
    ) -> Result<(Value, Change), StoreError> {
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if !name.is_empty() && self.objects.contains_key(&key(kind, namespace, &name)) {
            self.replace(kind, namespace, &name, obj)
        } else {
            self.create(kind, namespace, obj)
        }
    }

    /// Applies a JSON merge patch (RFC 7386) to an existing object.
    pub fn merge_patch(
        &mut self,
        kind: &'static Kind,
        namespace: &str,
        name: &str,
        patch: &Value,
    ) -> Result<(Value, Change), StoreError> {
        let mut obj = self.get(kind, namespace, name)?;
        merge(&mut obj, patch);
        self.replace(kind, namespace, name, obj)
    }

    /// Deletes an object, returning it.
    pub fn delete(
        &mut self,
        kind: &'static Kind,
        namespace: &str,
        name: &str,
    ) -> Result<(Value, Change), StoreError> {
        let old = self
            .objects
            .remove(&key(kind, namespace, name))
            .ok_or_else(|| StoreError::not_found(kind, name))?;
        self.rv += 1;
        let change = Change {
            rv: self.rv,
            kind,
            old: Some(old.clone()),
            new: None,
        };
        self.record(change.clone());
        // Like the DELETED watch event: the last state, at the deletion's version,
        // so a client can wait for the deletion's effect.
        let mut last = old;
        last["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        Ok((last, change))
    }

    fn put(
        &mut self,
        kind: &'static Kind,
        namespace: &str,
        name: &str,
        mut obj: Value,
    ) -> (Value, Change) {
        self.rv += 1;
        let map = obj.as_object_mut().expect("metadata() made it an object");
        map.insert("apiVersion".into(), json!(kind.api_version));
        map.insert("kind".into(), json!(kind.kind));
        let meta = metadata(&mut obj);
        meta.insert("resourceVersion".into(), json!(self.rv.to_string()));
        if kind.namespaced {
            meta.insert("namespace".into(), json!(namespace));
        } else {
            meta.remove("namespace");
        }
        let old = self.objects.insert(key(kind, namespace, name), obj.clone());
        let change = Change {
            rv: self.rv,
            kind,
            old,
            new: Some(obj.clone()),
        };
        self.record(change.clone());
        (obj, change)
    }

    fn record(&mut self, change: Change) {
        if self.log.len() == LOG_LIMIT
            && let Some(dropped) = self.log.pop_front()
        {
            self.compacted = dropped.rv;
        }
        self.log.push_back(change);
    }
}

/// The current time as RFC 3339 UTC (`2026-01-01T00:00:00Z`), as the API server
/// stamps `creationTimestamp` (kubectl shows the AGE from it).
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

/// Seconds since the epoch as RFC 3339 UTC (days to civil date: H. Hinnant's algorithm).
fn rfc3339(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn key(kind: &Kind, namespace: &str, name: &str) -> Key {
    let ns = if kind.namespaced { namespace } else { "" };
    (
        kind.api_version,
        kind.plural,
        ns.to_owned(),
        name.to_owned(),
    )
}

/// `obj.metadata` as a mutable map, creating what is missing.
fn metadata(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = json!({});
    }
    let map = obj.as_object_mut().expect("just made an object");
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    meta.as_object_mut().expect("just made an object")
}

/// JSON merge patch (RFC 7386).
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let map = target.as_object_mut().expect("just made an object");
    for (k, v) in patch {
        if v.is_null() {
            map.remove(k);
        } else {
            merge(map.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_767_225_599), "2025-12-31T23:59:59Z");
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
    }

    #[test]
    fn every_write_bumps_the_resource_version_and_is_logged() {
        let pods = kind_by_plural("v1", "pods").unwrap();
        let mut s = Store::default();
        let (p, _) = s
            .create(pods, "default", json!({"metadata": {"name": "a"}}))
            .unwrap();
        assert_eq!(p["metadata"]["resourceVersion"], "1");
        assert_eq!(p["metadata"]["namespace"], "default");
        assert!(
            s.create(pods, "default", json!({"metadata": {"name": "a"}}))
                .is_err()
        );
        s.delete(pods, "default", "a").unwrap();
        assert_eq!(s.rv(), 2);
        assert_eq!(s.changes_after(0).len(), 2);
        s.compact();
        assert!(s.changes_after(0).is_empty());
        assert_eq!(s.compacted(), 2);
    }
}
