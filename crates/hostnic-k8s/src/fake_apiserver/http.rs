//! Kubernetes REST paths onto the [`Store`](super::store::Store), and watch streaming.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};

use super::selector::{FieldSelector, LabelSelector};
use super::store::{Change, Kind, StoreError};
use super::{RecordedRequest, Shared, TOKEN};

type Body = BoxBody<Bytes, Infallible>;

/// Accepts connections until the task is aborted.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(req, shared).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn full(code: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .expect("valid response")
}

fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    full(
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &status_object(code, reason, message),
    )
}

fn status_object(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    })
}

fn store_error(e: StoreError) -> Response<Body> {
    status(e.code, e.reason, &e.message)
}

fn decode(s: &str) -> String {
    let s = s.replace('+', " ");
    percent_encoding::percent_decode_str(&s)
        .decode_utf8_lossy()
        .into_owned()
}

fn query_params(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

struct Route {
    kind: &'static Kind,
    namespace: Option<String>,
    name: Option<String>,
    /// A subresource, e.g. `status`.
    sub: Option<String>,
}

fn route(shared: &Shared, path: &str) -> Option<Route> {
    let kind_by_plural = |gv: &str, plural: &str| shared.kind_by_plural(gv, plural);
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (gv, rest) = match *segs.first()? {
        "api" if segs.len() >= 3 => (segs[1].to_owned(), &segs[2..]),
        "apis" if segs.len() >= 4 => (format!("{}/{}", segs[1], segs[2]), &segs[3..]),
        _ => return None,
    };
    if rest.len() >= 3
        && rest[0] == "namespaces"
        && let Some(kind) = kind_by_plural(&gv, rest[2]).filter(|k| k.namespaced)
    {
        return Some(Route {
            kind,
            namespace: Some(rest[1].to_owned()),
            name: rest.get(3).map(|s| (*s).to_owned()),
            sub: rest.get(4).map(|s| (*s).to_owned()),
        });
    }
    let kind = kind_by_plural(&gv, rest[0])?;
    Some(Route {
        kind,
        namespace: None,
        name: rest.get(1).map(|s| (*s).to_owned()),
        sub: rest.get(2).map(|s| (*s).to_owned()),
    })
}

/// The address clients reach this server at (its `Host` header), for `/api`.
fn server_address(req: &Request<Incoming>) -> String {
    req.headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_owned()
}

async fn handle(req: Request<Incoming>, shared: Arc<Shared>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let raw_query = req.uri().query().unwrap_or_default().to_owned();
    shared
        .requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(RecordedRequest {
            method: req.method().to_string(),
            path: path.clone(),
            query: decode(&raw_query),
        });
    if !shared.available.load(Ordering::SeqCst) {
        return status(503, "ServiceUnavailable", "the fake API server is down");
    }
    if let Some(auth) = req.headers().get("authorization")
        && auth.to_str().ok() != Some(&format!("Bearer {TOKEN}"))
    {
        return status(401, "Unauthorized", "Unauthorized");
    }
    if path == "/version" {
        return full(
            StatusCode::OK,
            &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-hostnic-fake"}),
        );
    }
    let custom_info = |k: &Kind| shared.custom(k).map(|c| (c.short_names, c.status));
    if let Some(doc) =
        super::discovery::document_with(&shared.kinds(), &path, &server_address(&req), &custom_info)
    {
        return match doc {
            Some(doc) => full(StatusCode::OK, &doc),
            None => status(
                404,
                "NotFound",
                &format!("the server could not find {path}"),
            ),
        };
    }
    let Some(route) = route(&shared, &path) else {
        return status(
            404,
            "NotFound",
            &format!("the server could not find {path}"),
        );
    };
    let params = query_params(&raw_query);
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let namespace = route.namespace.clone().unwrap_or_default();
    let method = req.method().clone();
    let custom = shared.custom(route.kind);
    // Subresources: a custom kind has `status` if its CRD says so, nothing else;
    // for built-in kinds `…/status` is served as the object itself.
    if let (Some(c), Some(sub)) = (&custom, &route.sub)
        && !(sub == "status" && c.status)
    {
        return status(
            404,
            "NotFound",
            &format!("the server could not find {path}"),
        );
    }
    let status_sub = custom.is_some() && route.sub.as_deref() == Some("status");
    let table = req
        .headers()
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"))
        && custom.as_ref().is_some_and(|c| !c.columns.is_empty());
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return status(400, "BadRequest", &e.to_string()),
    };
    if content_type.starts_with("application/vnd.kubernetes.protobuf") {
        return status(
            415,
            "UnsupportedMediaType",
            "the fake API server speaks JSON only (kubectl apply and kubectl get work; kubectl create <kind> sends protobuf)",
        );
    }
    let parse_body = || serde_json::from_slice::<Value>(&body);
    match (method, &route.name) {
        (Method::GET, None) => {
            let fields = match FieldSelector::parse(param("fieldSelector").unwrap_or_default()) {
                Ok(s) => s,
                Err(e) => return status(400, "BadRequest", &e),
            };
            let labels = match LabelSelector::parse(param("labelSelector").unwrap_or_default()) {
                Ok(s) => s,
                Err(e) => return status(400, "BadRequest", &e),
            };
            let filter = Filter {
                kind: route.kind,
                namespace: route.namespace.clone(),
                fields,
                labels,
            };
            if matches!(param("watch"), Some("true" | "1")) {
                let rv = param("resourceVersion").and_then(|v| v.parse::<u64>().ok());
                let timeout = param("timeoutSeconds")
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_secs);
                let bookmarks = matches!(param("allowWatchBookmarks"), Some("true" | "1"));
                watch(&shared, filter, rv, timeout, bookmarks)
            } else {
                let store = shared.store();
                let items: Vec<Value> = store
                    .list(route.kind, route.namespace.as_deref())
                    .into_iter()
                    .filter(|o| filter.matches(o))
                    .collect();
                let rv = store.rv().to_string();
                if let (true, Some(c)) = (table, &custom) {
                    return full(StatusCode::OK, &super::custom::table(c, &items, &rv));
                }
                full(
                    StatusCode::OK,
                    &json!({
                        "apiVersion": route.kind.api_version,
                        "kind": format!("{}List", route.kind.kind),
                        "metadata": {"resourceVersion": rv},
                        "items": items,
                    }),
                )
            }
        }
        (Method::GET, Some(name)) => match shared.store().get(route.kind, &namespace, name) {
            Ok(obj) => match (table, &custom) {
                (true, Some(c)) => {
                    let rv = obj["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or("0")
                        .to_owned();
                    full(StatusCode::OK, &super::custom::table(c, &[obj], &rv))
                }
                _ => full(StatusCode::OK, &obj),
            },
            Err(e) => store_error(e),
        },
        (Method::POST, None) => match parse_body() {
            Ok(obj) => {
                let crd = match crd_of(&shared, route.kind, &obj) {
                    Ok(crd) => crd,
                    Err(e) => return store_error(e),
                };
                let obj = match (&crd, &custom) {
                    (Some(_), _) => super::custom::established(obj),
                    (None, Some(c)) => super::custom::created(c, obj),
                    (None, None) => obj,
                };
                match shared.write(|s| s.create(route.kind, &namespace, obj)) {
                    Ok(obj) => {
                        if let Some(kinds) = crd {
                            shared.crd_written(kinds);
                        }
                        full(StatusCode::CREATED, &obj)
                    }
                    Err(e) => store_error(e),
                }
            }
            Err(e) => status(400, "BadRequest", &e.to_string()),
        },
        (Method::PUT, Some(name)) => match parse_body() {
            Ok(obj) => update(
                &shared,
                &route,
                custom.as_ref(),
                status_sub,
                &namespace,
                name,
                |_| obj,
            ),
            Err(e) => status(400, "BadRequest", &e.to_string()),
        },
        (Method::PATCH, Some(name)) => {
            if content_type.starts_with("application/json-patch") {
                return status(
                    415,
                    "UnsupportedMediaType",
                    "the fake API server applies merge patches only",
                );
            }
            match parse_body() {
                Ok(mut patch) => {
                    if content_type.starts_with("application/strategic-merge-patch") {
                        strip_patch_directives(&mut patch);
                    }
                    update(
                        &shared,
                        &route,
                        custom.as_ref(),
                        status_sub,
                        &namespace,
                        name,
                        |old| {
                            let mut merged = old.clone();
                            super::store::merge(&mut merged, &patch);
                            // The patch's resourceVersion (if any) is its precondition.
                            let wanted = patch.pointer("/metadata/resourceVersion").cloned();
                            merged["metadata"]["resourceVersion"] = wanted.unwrap_or(Value::Null);
                            merged
                        },
                    )
                }
                Err(e) => status(400, "BadRequest", &e.to_string()),
            }
        }
        (Method::DELETE, Some(name)) => {
            match shared.write(|s| s.delete(route.kind, &namespace, name)) {
                Ok(obj) => {
                    if route.kind == super::store::crd_kind() {
                        shared.crd_deleted(name);
                    }
                    full(StatusCode::OK, &obj)
                }
                Err(e) => store_error(e),
            }
        }
        (m, _) => status(405, "MethodNotAllowed", &format!("{m} not allowed here")),
    }
}

/// For a CustomResourceDefinition: the kinds it defines (checked); otherwise none.
type CrdKinds = Vec<(&'static Kind, super::custom::Custom)>;

fn crd_of(shared: &Shared, kind: &Kind, obj: &Value) -> Result<Option<CrdKinds>, StoreError> {
    if kind != super::store::crd_kind() {
        return Ok(None);
    }
    shared.crd_kinds(obj).map(Some)
}

/// A replace or patch of an existing object: `body` computes the written object
/// from the stored one; its `metadata.resourceVersion`, if set, must be the
/// stored one (409 otherwise). Custom kinds follow their status subresource and
/// generation rules; a CRD serves its kinds.
fn update(
    shared: &Shared,
    route: &Route,
    custom: Option<&super::custom::Custom>,
    status_sub: bool,
    namespace: &str,
    name: &str,
    body: impl FnOnce(&Value) -> Value,
) -> Response<Body> {
    let mut crd: Option<CrdKinds> = None;
    let result = shared.write(|s| {
        let old = s.get(route.kind, namespace, name)?;
        let new = body(&old);
        super::custom::precondition(route.kind, &old, &new)?;
        let new = match custom {
            Some(_) if status_sub => super::custom::status_write(&old, &new),
            Some(c) => super::custom::main_write(c, &old, new),
            None => match crd_of(shared, route.kind, &new)? {
                Some(kinds) => {
                    crd = Some(kinds);
                    super::custom::established(new)
                }
                None => new,
            },
        };
        s.replace(route.kind, namespace, name, new)
    });
    match result {
        Ok(obj) => {
            if let Some(kinds) = crd {
                shared.crd_written(kinds);
            }
            full(StatusCode::OK, &obj)
        }
        Err(e) => store_error(e),
    }
}

/// Drops the directives of a strategic merge patch (`$setElementOrder/…`,
/// `$retainKeys`, `$patch`, `$deleteFromPrimitiveList/…`), which kubectl apply
/// sends for lists with merge keys: the rest is applied as a JSON merge patch
/// (lists are replaced whole, which is what apply means for the kinds served).
fn strip_patch_directives(patch: &mut Value) {
    match patch {
        Value::Object(map) => {
            map.retain(|k, _| !k.starts_with('$'));
            map.values_mut().for_each(strip_patch_directives);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_patch_directives),
        _ => {}
    }
}

/// What a list or watch selects.
struct Filter {
    kind: &'static Kind,
    namespace: Option<String>,
    fields: FieldSelector,
    labels: LabelSelector,
}

impl Filter {
    fn matches(&self, obj: &Value) -> bool {
        let in_namespace = self.namespace.as_deref().is_none_or(|ns| {
            obj.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns)
        });
        in_namespace && self.fields.matches(obj) && self.labels.matches(obj)
    }

    /// The watch event a change is for this watch: an object that starts matching is
    /// ADDED, one that stops matching (or is deleted) DELETED.
    fn event(&self, change: &Change) -> Option<Value> {
        if change.kind != self.kind {
            return None;
        }
        let old = change.old.as_ref().filter(|o| self.matches(o));
        let new = change.new.as_ref().filter(|o| self.matches(o));
        let (kind, obj) = match (old, new) {
            (None, Some(n)) => ("ADDED", n.clone()),
            (Some(_), Some(n)) => ("MODIFIED", n.clone()),
            (Some(o), None) => {
                let mut last = change.new.clone().unwrap_or_else(|| o.clone());
                last["metadata"]["resourceVersion"] = json!(change.rv.to_string());
                ("DELETED", last)
            }
            (None, None) => return None,
        };
        Some(json!({"type": kind, "object": obj}))
    }
}

fn line(v: &Value) -> Bytes {
    let mut s = v.to_string();
    s.push('\n');
    Bytes::from(s)
}

fn watch(
    shared: &Arc<Shared>,
    filter: Filter,
    rv: Option<u64>,
    timeout: Option<Duration>,
    bookmarks: bool,
) -> Response<Body> {
    let mut epoch = shared.epoch.subscribe();
    epoch.borrow_and_update();
    // Subscribe under the store lock: writes publish under it, so nothing is missed or
    // seen twice between the replay and the live changes.
    let (initial, start_rv, mut live) = {
        let store = shared.store();
        let live = shared.changes.subscribe();
        let initial: Vec<Value> = match rv {
            None | Some(0) => store
                .list(filter.kind, filter.namespace.as_deref())
                .into_iter()
                .filter(|o| filter.matches(o))
                .map(|o| json!({"type": "ADDED", "object": o}))
                .collect(),
            Some(rv) if rv < store.compacted() => vec![json!({
                "type": "ERROR",
                "object": status_object(410, "Expired", &format!("too old resource version: {rv} ({})", store.compacted())),
            })],
            Some(rv) => store
                .changes_after(rv)
                .iter()
                .filter_map(|c| filter.event(c))
                .collect(),
        };
        (initial, store.rv(), live)
    };
    let gone = initial.iter().any(|e| e["type"] == "ERROR");
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    tokio::spawn(async move {
        for event in &initial {
            if tx.send(line(event)).await.is_err() {
                return;
            }
        }
        if gone {
            return;
        }
        // With bookmarks, every write the watch does not carry is announced as a
        // BOOKMARK at its version, so a client knows how far its watch is current
        // (a real API server sends them at its own pace; here, at once).
        let bookmark = |rv: u64| {
            line(&json!({"type": "BOOKMARK", "object": {
                "apiVersion": filter.kind.api_version, "kind": filter.kind.kind,
                "metadata": {"resourceVersion": rv.to_string()},
            }}))
        };
        if bookmarks && tx.send(bookmark(start_rv)).await.is_err() {
            return;
        }
        let deadline = tokio::time::sleep(timeout.unwrap_or(Duration::from_secs(3600)));
        let mut deadline = std::pin::pin!(deadline);
        loop {
            tokio::select! {
                change = live.recv() => match change {
                    Ok(change) if change.rv > start_rv => {
                        let frame = match filter.event(&change) {
                            Some(event) => Some(line(&event)),
                            None => bookmarks.then(|| bookmark(change.rv)),
                        };
                        if let Some(frame) = frame
                            && tx.send(frame).await.is_err()
                        {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let expired = json!({"type": "ERROR", "object": status_object(410, "Expired", "watch fell behind")});
                        let _ = tx.send(line(&expired)).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = epoch.changed() => return,
                _ = &mut deadline => return,
                _ = tx.closed() => return,
            }
        }
    });
    let frames = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(BodyExt::boxed(StreamBody::new(frames)))
        .expect("valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_of_namespaced_cluster_and_grouped_kinds() {
        let shared = Shared::new();
        let route = |path: &str| route(&shared, path);
        let r = route("/api/v1/namespaces/default/pods/web").unwrap();
        assert_eq!(
            (r.kind.kind, r.namespace.as_deref(), r.name.as_deref()),
            ("Pod", Some("default"), Some("web"))
        );
        let r = route("/api/v1/pods").unwrap();
        assert_eq!((r.kind.kind, r.namespace, r.name), ("Pod", None, None));
        let r = route("/api/v1/namespaces/kube-system").unwrap();
        assert_eq!(
            (r.kind.kind, r.name.as_deref()),
            ("Namespace", Some("kube-system"))
        );
        let r = route("/apis/events.k8s.io/v1/namespaces/x/events").unwrap();
        assert_eq!(r.kind.api_version, "events.k8s.io/v1");
        let r = route("/apis/networking.k8s.io/v1/networkpolicies").unwrap();
        assert_eq!(r.kind.kind, "NetworkPolicy");
        assert!(route("/apis/apps/v1/daemonsets").is_none());
    }
}
