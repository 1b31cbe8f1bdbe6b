//! API discovery, as `kubectl` reads it before anything else: `/api` (the core
//! group's versions), `/apis` (every other group), `/apis/<group>`, and the
//! resource list of each group/version (`/api/v1`, `/apis/<group>/<version>`),
//! all derived from the kinds the server serves ([`super::store::KINDS`] plus
//! any added with [`FakeApiServer::serve_kind`](super::FakeApiServer::serve_kind)),
//! so a kind added later shows up here without more code.
//!
//! Only the legacy (unaggregated) documents: `kubectl` asks for the aggregated
//! form first and falls back to these when the answer is plain JSON. No OpenAPI
//! either: `kubectl apply` then needs `--validate=false`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::store::Kind;

/// The verbs every served kind supports.
const VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

/// kubectl's short names for the built-in kinds the server may serve.
fn short_names(kind: &Kind) -> &'static [&'static str] {
    match (kind.api_version, kind.plural) {
        ("v1", "pods") => &["po"],
        ("v1", "nodes") => &["no"],
        ("v1", "namespaces") => &["ns"],
        ("v1", "events") => &["ev"],
        ("events.k8s.io/v1", "events") => &["ev"],
        ("networking.k8s.io/v1", "networkpolicies") => &["netpol"],
        ("apiextensions.k8s.io/v1", "customresourcedefinitions") => &["crd", "crds"],
        _ => &[],
    }
}

/// `(group, version)` of an `apiVersion` (`""` for the core group).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.split_once('/').unwrap_or(("", api_version))
}

/// `GET /api`: the core group's versions.
pub fn core_versions(kinds: &[&Kind], server_address: &str) -> Value {
    let mut versions: Vec<&str> = kinds
        .iter()
        .map(|k| split_api_version(k.api_version))
        .filter(|(g, _)| g.is_empty())
        .map(|(_, v)| v)
        .collect();
    versions.sort_unstable();
    versions.dedup();
    json!({
        "kind": "APIVersions",
        "versions": versions,
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

/// The named groups and their versions, sorted.
fn groups<'a>(kinds: &[&'a Kind]) -> BTreeMap<&'a str, Vec<&'a str>> {
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for k in kinds {
        let (g, v) = split_api_version(k.api_version);
        if !g.is_empty() {
            let versions = groups.entry(g).or_default();
            if !versions.contains(&v) {
                versions.push(v);
            }
        }
    }
    groups
}

fn group_object(name: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({
        "kind": "APIGroup", "apiVersion": "v1",
        "name": name,
        "preferredVersion": versions[0],
        "versions": versions,
    })
}

/// `GET /apis`: every named group.
pub fn group_list(kinds: &[&Kind]) -> Value {
    let groups: Vec<Value> = groups(kinds)
        .iter()
        .map(|(name, versions)| {
            let mut g = group_object(name, versions);
            if let Some(o) = g.as_object_mut() {
                o.remove("kind");
                o.remove("apiVersion");
            }
            g
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/<group>`; `None` if no served kind is in it.
pub fn group(kinds: &[&Kind], name: &str) -> Option<Value> {
    groups(kinds)
        .get(name)
        .map(|versions| group_object(name, versions))
}

/// What discovery says of a kind served from a CRD: its short names and whether
/// it has the `status` subresource (built-in kinds: `None`).
pub type CustomInfo<'a> = &'a dyn Fn(&Kind) -> Option<(Vec<String>, bool)>;

/// `GET /api/v1` or `/apis/<group>/<version>`: the resources of `api_version`
/// (with their `status` subresource); `None` if nothing is served there.
fn resource_list_with(kinds: &[&Kind], api_version: &str, custom: CustomInfo<'_>) -> Option<Value> {
    let mut resources = Vec::new();
    for k in kinds.iter().filter(|k| k.api_version == api_version) {
        let (short, status) = match custom(k) {
            Some((short, status)) => (short, status),
            None => (
                short_names(k).iter().map(|s| (*s).to_owned()).collect(),
                true,
            ),
        };
        resources.push(json!({
            "name": k.plural,
            "singularName": k.kind.to_lowercase(),
            "namespaced": k.namespaced,
            "kind": k.kind,
            "verbs": VERBS,
            "shortNames": short,
        }));
        if !status {
            continue;
        }
        resources.push(json!({
            "name": format!("{}/status", k.plural),
            "singularName": "",
            "namespaced": k.namespaced,
            "kind": k.kind,
            "verbs": ["get", "patch", "update"],
        }));
    }
    if resources.is_empty() {
        return None;
    }
    Some(json!({
        "kind": "APIResourceList", "apiVersion": "v1",
        "groupVersion": api_version,
        "resources": resources,
    }))
}

/// The discovery document at `path`, if `path` is a discovery path:
/// `Some(None)` for a discovery path with nothing served (404).
#[cfg(test)]
pub fn document(kinds: &[&Kind], path: &str, server_address: &str) -> Option<Option<Value>> {
    document_with(kinds, path, server_address, &|_| None)
}

/// [`document`], with what CRDs say of the kinds they define.
pub fn document_with(
    kinds: &[&Kind],
    path: &str,
    server_address: &str,
    custom: CustomInfo<'_>,
) -> Option<Option<Value>> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["api"] => Some(Some(core_versions(kinds, server_address))),
        ["api", version] => Some(resource_list_with(kinds, version, custom)),
        ["apis"] => Some(Some(group_list(kinds))),
        ["apis", g] => Some(group(kinds, g)),
        ["apis", g, v] => Some(resource_list_with(kinds, &format!("{g}/{v}"), custom)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::store::KINDS;
    use super::*;

    fn kinds() -> Vec<&'static Kind> {
        KINDS.iter().collect()
    }

    #[test]
    fn the_core_group_lists_v1_and_its_resources() {
        let api = document(&kinds(), "/api", "127.0.0.1:1").unwrap().unwrap();
        assert_eq!(api["versions"], json!(["v1"]));
        let v1 = document(&kinds(), "/api/v1", "x").unwrap().unwrap();
        let pods = v1["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "pods")
            .unwrap();
        assert_eq!(pods["kind"], "Pod");
        assert_eq!(pods["namespaced"], true);
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert!(pods["verbs"].as_array().unwrap().contains(&json!("watch")));
    }

    #[test]
    fn named_groups_are_listed_with_their_versions() {
        let apis = document(&kinds(), "/apis", "x").unwrap().unwrap();
        let names: Vec<&str> = apis["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"networking.k8s.io"), "{names:?}");
        assert!(names.contains(&"events.k8s.io"), "{names:?}");
        let np = document(&kinds(), "/apis/networking.k8s.io/v1", "x")
            .unwrap()
            .unwrap();
        assert_eq!(np["resources"][0]["name"], "networkpolicies");
        assert_eq!(
            document(&kinds(), "/apis/networking.k8s.io", "x")
                .unwrap()
                .unwrap()["preferredVersion"]["version"],
            "v1"
        );
        // A group nothing is served in: a discovery path that answers 404.
        assert_eq!(document(&kinds(), "/apis/apps/v1", "x"), Some(None));
        assert_eq!(document(&kinds(), "/api/v1/pods", "x"), None);
    }

    #[test]
    fn a_kind_served_later_appears() {
        static LEASES: Kind = Kind {
            api_version: "coordination.k8s.io/v1",
            plural: "leases",
            kind: "Lease",
            namespaced: true,
        };
        let mut k = kinds();
        k.push(&LEASES);
        let list = document(&k, "/apis/coordination.k8s.io/v1", "x")
            .unwrap()
            .unwrap();
        assert_eq!(list["resources"][0]["kind"], "Lease");
        assert!(
            group_list(&k)["groups"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["name"] == "coordination.k8s.io")
        );
    }
}
