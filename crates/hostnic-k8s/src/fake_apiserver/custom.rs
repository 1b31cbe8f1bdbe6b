//! Custom resources, as the real API server serves them: a
//! `CustomResourceDefinition` makes its kinds served (and visible in discovery),
//! with the `status` subresource (writes to the resource ignore `status`, writes
//! to `/status` ignore everything else), `metadata.generation` bumped when the
//! spec changes only, and server-side tables from `additionalPrinterColumns`
//! (what `kubectl get` prints). Optimistic concurrency — a write naming an older
//! `metadata.resourceVersion` answers 409 Conflict — holds for every kind.

use serde_json::{Map, Value, json};

use super::store::{Kind, StoreError};

/// The extra behaviour of a kind served from a CRD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Custom {
    /// The CRD that defines it.
    pub crd: String,
    /// It has the `status` subresource.
    pub status: bool,
    /// `kubectl get` columns.
    pub columns: Vec<Column>,
    /// Short names (`kubectl get hnn`).
    pub short_names: Vec<String>,
}

/// One of `additionalPrinterColumns`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Header.
    pub name: String,
    /// `string`, `integer`, `number`, `boolean`, `date`.
    pub type_: String,
    /// A JSONPath of the simple kind CRDs use (`.a.b`, `.a[0]`, `.a[?(@.k=="v")].b`).
    pub json_path: String,
    /// Help text.
    pub description: String,
    /// 0: shown by default; more: only with `-o wide`.
    pub priority: i64,
}

fn invalid(message: impl Into<String>) -> StoreError {
    StoreError {
        code: 422,
        reason: "Invalid",
        message: message.into(),
    }
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

fn text<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// The kinds a CRD defines (one per served version), each with its behaviour.
/// `known` finds a kind served already, so a CRD written again reuses it.
pub(crate) fn crd_kinds(
    crd: &Value,
    known: impl Fn(&str, &str) -> Option<&'static Kind>,
) -> Result<Vec<(&'static Kind, Custom)>, StoreError> {
    let name = text(crd, "/metadata/name").ok_or_else(|| invalid("metadata.name is required"))?;
    let group = text(crd, "/spec/group").ok_or_else(|| invalid("spec.group is required"))?;
    let plural =
        text(crd, "/spec/names/plural").ok_or_else(|| invalid("spec.names.plural is required"))?;
    let kind =
        text(crd, "/spec/names/kind").ok_or_else(|| invalid("spec.names.kind is required"))?;
    if name != format!("{plural}.{group}") {
        return Err(invalid(format!(
            "metadata.name must be spec.names.plural + \".\" + spec.group ({plural}.{group}), not {name}"
        )));
    }
    let namespaced = match text(crd, "/spec/scope") {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        other => {
            return Err(invalid(format!(
                "spec.scope must be Namespaced or Cluster, not {other:?}"
            )));
        }
    };
    let short_names: Vec<String> = crd
        .pointer("/spec/names/shortNames")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| invalid("spec.versions must name at least one version"))?;
    let mut out = Vec::new();
    for v in versions {
        if v.get("served").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        let version = text(v, "/name").ok_or_else(|| invalid("a version without a name"))?;
        let api_version = format!("{group}/{version}");
        let k = match known(&api_version, plural) {
            Some(k) => k,
            None => Box::leak(Box::new(Kind {
                api_version: leak(&api_version),
                plural: leak(plural),
                kind: leak(kind),
                namespaced,
            })),
        };
        let columns = v
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .map(|cols| {
                cols.iter()
                    .map(|c| Column {
                        name: text(c, "/name").unwrap_or_default().to_owned(),
                        type_: text(c, "/type").unwrap_or("string").to_owned(),
                        json_path: text(c, "/jsonPath").unwrap_or_default().to_owned(),
                        description: text(c, "/description").unwrap_or_default().to_owned(),
                        priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push((
            k,
            Custom {
                crd: name.to_owned(),
                status: v.pointer("/subresources/status").is_some(),
                columns,
                short_names: short_names.clone(),
            },
        ));
    }
    Ok(out)
}

/// The CRD as the API server stores it: established, its names accepted
/// (`kubectl wait --for condition=established` works).
pub(crate) fn established(mut crd: Value) -> Value {
    let names = crd.pointer("/spec/names").cloned().unwrap_or(json!({}));
    let now = super::store::now_rfc3339();
    let condition = |t: &str, reason: &str| json!({"type": t, "status": "True", "reason": reason, "message": "", "lastTransitionTime": now});
    crd["status"] = json!({
        "acceptedNames": names,
        "conditions": [condition("NamesAccepted", "NoConflicts"), condition("Established", "InitialNamesAccepted")],
        "storedVersions": crd.pointer("/spec/versions").and_then(Value::as_array)
            .map(|v| v.iter().filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                .filter_map(|v| v.get("name").cloned()).collect::<Vec<_>>())
            .unwrap_or_default(),
    });
    crd
}

/// 409 Conflict if `body` names a resourceVersion other than the stored object's.
pub(crate) fn precondition(kind: &Kind, old: &Value, body: &Value) -> Result<(), StoreError> {
    let wanted = body
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str);
    let current = old
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str);
    match wanted {
        Some(w) if !w.is_empty() && Some(w) != current => Err(StoreError {
            code: 409,
            reason: "Conflict",
            message: format!(
                "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                kind.plural,
                old.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            ),
        }),
        _ => Ok(()),
    }
}

/// Everything but `metadata` and (with the status subresource) `status`: what
/// `metadata.generation` counts changes of.
fn spec_part(custom: &Custom, obj: &Value) -> Map<String, Value> {
    let mut map = obj.as_object().cloned().unwrap_or_default();
    map.remove("metadata");
    map.remove("apiVersion");
    map.remove("kind");
    if custom.status {
        map.remove("status");
    }
    map
}

/// A new object of a custom kind: generation 1, no status when the status
/// subresource owns it.
pub(crate) fn created(custom: &Custom, mut obj: Value) -> Value {
    if custom.status
        && let Some(map) = obj.as_object_mut()
    {
        map.remove("status");
    }
    obj["metadata"]["generation"] = json!(1);
    obj
}

/// A write to the main resource of a custom kind: the stored status is kept
/// (with the status subresource), the generation bumped if the spec changed.
pub(crate) fn main_write(custom: &Custom, old: &Value, mut new: Value) -> Value {
    if custom.status {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(map) = new.as_object_mut() {
                    map.remove("status");
                }
            }
        }
    }
    let generation = old
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let changed = spec_part(custom, old) != spec_part(custom, &new);
    new["metadata"]["generation"] = json!(generation + i64::from(changed));
    new
}

/// A write to `/status`: only the status changes.
pub(crate) fn status_write(old: &Value, new: &Value) -> Value {
    let mut out = old.clone();
    match new.get("status") {
        Some(s) => out["status"] = s.clone(),
        None => {
            if let Some(map) = out.as_object_mut() {
                map.remove("status");
            }
        }
    }
    out
}

/// Evaluates the simple JSONPaths CRD printer columns use.
pub(crate) fn jsonpath<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = obj;
    let mut rest = path.trim().trim_start_matches('{').trim_end_matches('}');
    rest = rest.strip_prefix('$').unwrap_or(rest);
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            cur = cur.get(&r[..end])?;
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let inner = &r[..end];
            rest = &r[end + 1..];
            if let Some(filter) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                let (key, want) = filter.split_once("==")?;
                let want = want.trim().trim_matches(['"', '\'']);
                cur = cur
                    .as_array()?
                    .iter()
                    .find(|item| item.get(key.trim()).and_then(Value::as_str) == Some(want))?;
            } else {
                cur = cur.as_array()?.get(inner.trim().parse::<usize>().ok()?)?;
            }
        } else {
            return None;
        }
    }
    Some(cur)
}

/// `5s`, `3m`, `2h`, `4d`: the age `kubectl` shows, from an RFC 3339 time.
fn age(rfc3339: &str) -> String {
    let Some(then) = parse_rfc3339(rfc3339) else {
        return "<unknown>".into();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let secs = now.saturating_sub(then);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SSZ`.
fn parse_rfc3339(s: &str) -> Option<u64> {
    let (date, time) = s.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':').map(|p| p.parse::<f64>());
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    // Days from civil (H. Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + (hh * 3600.0 + mm * 60.0 + ss) as i64;
    u64::try_from(secs).ok()
}

/// A `meta.k8s.io/v1` Table of `items` with the kind's printer columns, as the
/// API server answers `kubectl get` (`Accept: application/json;as=Table;…`).
pub(crate) fn table(custom: &Custom, items: &[Value], resource_version: &str) -> Value {
    let mut columns = vec![json!({
        "name": "Name", "type": "string", "format": "name", "priority": 0,
        "description": "Name must be unique within a namespace.",
    })];
    for c in &custom.columns {
        columns.push(json!({
            "name": c.name, "type": if c.type_ == "date" { "string" } else { c.type_.as_str() },
            "format": "", "description": c.description, "priority": c.priority,
        }));
    }
    let rows: Vec<Value> = items
        .iter()
        .map(|item| {
            let mut cells = vec![
                item.pointer("/metadata/name")
                    .cloned()
                    .unwrap_or(Value::Null),
            ];
            for c in &custom.columns {
                let v = jsonpath(item, &c.json_path);
                cells.push(match (c.type_.as_str(), v) {
                    (_, None) => Value::Null,
                    ("date", Some(Value::String(s))) => json!(age(s)),
                    (_, Some(v)) => v.clone(),
                });
            }
            json!({
                "cells": cells,
                "object": {
                    "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                    "metadata": item.get("metadata").cloned().unwrap_or(json!({})),
                },
            })
        })
        .collect();
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": columns,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn custom(status: bool) -> Custom {
        Custom {
            crd: "things.example.io".into(),
            status,
            columns: Vec::new(),
            short_names: Vec::new(),
        }
    }

    #[test]
    fn jsonpaths_of_printer_columns() {
        let obj = json!({"spec": {"n": 3}, "status": {"conditions": [
            {"type": "Valid", "status": "True"}, {"type": "Ready", "status": "False", "reason": "Waiting"}]}});
        assert_eq!(jsonpath(&obj, ".spec.n"), Some(&json!(3)));
        assert_eq!(
            jsonpath(&obj, r#".status.conditions[?(@.type=="Ready")].reason"#),
            Some(&json!("Waiting"))
        );
        assert_eq!(
            jsonpath(&obj, ".status.conditions[0].type"),
            Some(&json!("Valid"))
        );
        assert_eq!(jsonpath(&obj, ".status.missing"), None);
    }

    #[test]
    fn generation_counts_spec_changes_only() {
        let c = custom(true);
        let old = created(
            &c,
            json!({"metadata": {"name": "a"}, "spec": {"n": 1}, "status": {"x": 1}}),
        );
        assert_eq!(old["metadata"]["generation"], 1);
        assert!(old.get("status").is_none(), "status is not taken on create");
        let mut old = old;
        old["status"] = json!({"x": 1});
        let same = main_write(
            &c,
            &old,
            json!({"metadata": {"name": "a", "labels": {"l": "v"}}, "spec": {"n": 1}, "status": {"x": 2}}),
        );
        assert_eq!(same["metadata"]["generation"], 1);
        assert_eq!(same["status"], json!({"x": 1}), "status kept");
        let changed = main_write(
            &c,
            &same,
            json!({"metadata": {"name": "a"}, "spec": {"n": 2}}),
        );
        assert_eq!(changed["metadata"]["generation"], 2);
        let status = status_write(&changed, &json!({"spec": {"n": 9}, "status": {"x": 3}}));
        assert_eq!(
            (status["spec"]["n"].clone(), status["status"]["x"].clone()),
            (json!(2), json!(3))
        );
    }

    #[test]
    fn a_stale_resource_version_is_a_conflict() {
        let k = Kind {
            api_version: "v1",
            plural: "things",
            kind: "Thing",
            namespaced: false,
        };
        let old = json!({"metadata": {"name": "a", "resourceVersion": "7"}});
        assert!(precondition(&k, &old, &json!({"metadata": {"resourceVersion": "7"}})).is_ok());
        assert!(precondition(&k, &old, &json!({"metadata": {}})).is_ok());
        let e = precondition(&k, &old, &json!({"metadata": {"resourceVersion": "6"}})).unwrap_err();
        assert_eq!((e.code, e.reason), (409, "Conflict"));
    }

    #[test]
    fn rfc3339_round_trips_with_the_store_format() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(951_782_400));
        assert_eq!(parse_rfc3339("2025-12-31T23:59:59Z"), Some(1_767_225_599));
    }
}
