//! HTTP serving (hyper 1), the request quota, authentication, throttling, fault
//! injection, job timing and the admin endpoints.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::quota::{QuotaBook, QuotaReport};
use super::state::{ActionCounter, ApiError, KeyCounter, NicEvent, Params, SimState};
use super::{AttachHook, SimConfig};
use crate::errors::{
    AUTH_FAILED, INTERNAL_ERROR, MALFORMED_REQUEST, NOT_FOUND, QUOTA_EXCEEDED, REQUEST_EXPIRED,
    SERVER_BUSY,
};
use crate::limits::{WindowLimit, scale_down};
use crate::signer::{self, parse_time_stamp};

pub(crate) struct Core {
    config: SimConfig,
    state: Mutex<SimState>,
    hook: Option<Arc<dyn AttachHook>>,
    fault_rate: Mutex<f64>,
    throttle: Mutex<(f64, Instant)>,
    quota: Mutex<QuotaBook>,
    shutdown: watch::Receiver<bool>,
}

/// A running simulator. Dropping it stops the server.
pub struct SimHandle {
    addr: SocketAddr,
    core: Arc<Core>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("addr", &self.addr)
            .finish()
    }
}

impl SimHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API URL, e.g. `http://127.0.0.1:PORT/iaas/`.
    pub fn url(&self) -> String {
        format!(
            "http://{}{}/",
            self.addr,
            self.core.config.uri.trim_end_matches('/')
        )
    }

    /// The zone served.
    pub fn zone(&self) -> String {
        self.core.lock().zone.clone()
    }

    /// A copy of the whole state.
    pub fn state(&self) -> SimState {
        self.core.lock().clone()
    }

    /// Requests and answers per action.
    pub fn counters(&self) -> BTreeMap<String, ActionCounter> {
        self.core.lock().counters.clone()
    }

    /// Requests and answers per access key (as the requests named it).
    pub fn counters_by_key(&self) -> BTreeMap<String, KeyCounter> {
        self.core.lock().counters_by_key.clone()
    }

    /// The request quota and its state (what `/_sim/quota` answers).
    pub fn quota(&self) -> QuotaReport {
        self.core.quota().report(Instant::now())
    }

    /// Changes the request quota (`None`: off), keeping what was counted.
    pub fn set_quota(&self, limit: Option<WindowLimit>) {
        self.core.quota().set(limit);
    }

    /// Frees the request quota of every access key now.
    pub fn reset_quota(&self) {
        self.core.quota().reset();
    }

    /// Makes a NIC disappear from the cloud (the hook hears `Vanished` if it was attached).
    pub async fn vanish_nic(&self, nic: &str) -> Result<(), ApiError> {
        let event = self.core.lock().vanish_nic(nic)?;
        if let Some(event) = event {
            self.core.notify(&[event]).await;
        }
        Ok(())
    }

    /// The next `count` jobs fail (the NICs stay as they were).
    pub fn fail_next_jobs(&self, count: u32) {
        self.core.lock().fail_next_jobs = count;
    }

    /// Changes the fault rate.
    pub fn set_fault_rate(&self, rate: f64) {
        *self
            .core
            .fault_rate
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = rate.clamp(0.0, 1.0);
    }

    /// Stops serving and waits for the accept loop to end.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

pub(crate) async fn start(
    config: SimConfig,
    hook: Option<Arc<dyn AttachHook>>,
) -> std::io::Result<SimHandle> {
    config
        .topology
        .validate()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    if !(config.time_scale.is_finite() && config.time_scale > 0.0) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "time scale must be a positive number, not {}",
                config.time_scale
            ),
        ));
    }
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let (stop, shutdown) = watch::channel(false);
    let core = Arc::new(Core {
        state: Mutex::new(SimState::new(&config.topology)),
        fault_rate: Mutex::new(config.fault_rate.clamp(0.0, 1.0)),
        throttle: Mutex::new((config.rate_limit_qps.max(1.0), Instant::now())),
        quota: Mutex::new(QuotaBook::new(config.quota, config.time_scale)),
        config,
        hook,
        shutdown: shutdown.clone(),
    });
    let task = tokio::spawn(accept_loop(listener, core.clone(), shutdown));
    Ok(SimHandle {
        addr,
        core,
        stop,
        task: Some(task),
    })
}

async fn accept_loop(listener: TcpListener, core: Arc<Core>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let core = core.clone();
                let mut shutdown = shutdown.clone();
                tokio::spawn(async move {
                    let svc_core = core.clone();
                    let service = service_fn(move |req| {
                        let core = svc_core.clone();
                        async move { Ok::<_, Infallible>(core.handle(req).await) }
                    });
                    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = shutdown.changed() => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                });
            }
        }
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn decode_form(input: &[u8], into: &mut Params) {
    for (k, v) in url::form_urlencoded::parse(input) {
        into.insert(k.into_owned(), v.into_owned());
    }
}

impl Core {
    fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn quota(&self) -> std::sync::MutexGuard<'_, QuotaBook> {
        self.quota.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A simulated duration in real time.
    fn real(&self, d: Duration) -> Duration {
        scale_down(d, self.config.time_scale)
    }

    async fn notify(&self, events: &[NicEvent]) {
        if let Some(hook) = &self.hook {
            for event in events {
                hook.on_nic_event(event).await;
            }
        }
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => Bytes::new(),
        };
        let base = self.config.uri.trim_end_matches('/');
        if path == base || path == format!("{base}/") {
            let mut params = Params::new();
            decode_form(query.as_bytes(), &mut params);
            if method == Method::POST {
                decode_form(&body, &mut params);
            }
            let answer = self.clone().api(method.as_str(), &path, params).await;
            return json_response(StatusCode::OK, &answer);
        }
        if let Some(admin) = path.strip_prefix("/_sim/") {
            let mut input: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if !input.is_object() {
                input = json!({});
            }
            // Query parameters count as JSON string fields (`?by=access_key`).
            if let Value::Object(map) = &mut input {
                for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
                    map.entry(k.into_owned())
                        .or_insert(Value::String(v.into_owned()));
                }
            }
            return self.admin(admin, &input).await;
        }
        json_response(
            StatusCode::NOT_FOUND,
            &json!({"ret_code": NOT_FOUND, "message": format!("no such path {path}")}),
        )
    }

    async fn admin(&self, what: &str, input: &Value) -> Response<Full<Bytes>> {
        let ok = |v: Value| json_response(StatusCode::OK, &v);
        match what {
            "state" => ok(serde_json::to_value(&*self.lock()).unwrap_or(Value::Null)),
            "counters" => match input.get("by").and_then(Value::as_str) {
                None | Some("action") => {
                    ok(serde_json::to_value(&self.lock().counters).unwrap_or(Value::Null))
                }
                Some("access_key" | "access-key" | "key") => {
                    ok(serde_json::to_value(&self.lock().counters_by_key).unwrap_or(Value::Null))
                }
                Some(other) => json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"ret_code": MALFORMED_REQUEST, "message": format!("counters by [{other}]: expected action or access_key")}),
                ),
            },
            "quota" => {
                if let Some(q) = input.get("quota") {
                    let parsed = match q {
                        Value::String(s) => {
                            WindowLimit::parse_optional(s).map_err(|e| e.to_string())
                        }
                        Value::Null => Ok(None),
                        other => Err(format!(
                            "quota {other}: expected a string such as \"2000/3600\" or \"off\""
                        )),
                    };
                    match parsed {
                        Ok(limit) => self.quota().set(limit),
                        Err(message) => {
                            return json_response(
                                StatusCode::BAD_REQUEST,
                                &json!({"ret_code": MALFORMED_REQUEST, "message": message}),
                            );
                        }
                    }
                }
                if input.get("reset").and_then(Value::as_bool) == Some(true) {
                    self.quota().reset();
                }
                let report = self.quota().report(Instant::now());
                ok(serde_json::to_value(&report).unwrap_or(Value::Null))
            }
            "vanish" => {
                let Some(nic) = input.get("nic_id").and_then(Value::as_str) else {
                    return json_response(
                        StatusCode::BAD_REQUEST,
                        &json!({"message": "expected {\"nic_id\": \"52:54:..\"}"}),
                    );
                };
                let result = self.lock().vanish_nic(nic);
                match result {
                    Ok(event) => {
                        if let Some(e) = event {
                            self.notify(&[e]).await;
                        }
                        ok(json!({"ret_code": 0}))
                    }
                    Err(e) => json_response(
                        StatusCode::NOT_FOUND,
                        &json!({"ret_code": e.code, "message": e.message}),
                    ),
                }
            }
            "fail-jobs" => {
                let n = input.get("count").and_then(Value::as_u64).unwrap_or(1);
                self.lock().fail_next_jobs = n as u32;
                ok(json!({"ret_code": 0, "fail_next_jobs": n}))
            }
            "fault-rate" => {
                let f = input
                    .get("fault_rate")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0);
                *self.fault_rate.lock().unwrap_or_else(|e| e.into_inner()) = f.clamp(0.0, 1.0);
                ok(json!({"ret_code": 0, "fault_rate": f}))
            }
            _ => json_response(
                StatusCode::NOT_FOUND,
                &json!({"message": format!("unknown admin endpoint {what}")}),
            ),
        }
    }

    /// One API request: the quota, auth, throttling, faults, then the action.
    async fn api(self: Arc<Self>, method: &str, path: &str, params: Params) -> Value {
        let action = params.get("action").cloned().unwrap_or_default();
        let key = params.get("access_key_id").cloned().unwrap_or_default();
        let counted = if action.is_empty() { "<none>" } else { &action };
        let result = self
            .quota()
            .admit(&key, counted, Instant::now())
            .and_then(|()| self.check_and_run(method, path, &action, &params));
        match result {
            Ok((mut value, jobs)) => {
                self.lock().count(counted, &key, 0);
                for job in jobs {
                    tokio::spawn(self.clone().run_job(job));
                }
                if let Value::Object(map) = &mut value {
                    map.insert("action".into(), json!(format!("{action}Response")));
                    map.insert("ret_code".into(), json!(0));
                }
                value
            }
            Err(e) => {
                self.lock().count(counted, &key, e.code);
                tracing::debug!(action, ret_code = e.code, message = %e.message, "sim error answer");
                json!({"ret_code": e.code, "message": e.message})
            }
        }
    }

    fn check_and_run(
        &self,
        method: &str,
        path: &str,
        action: &str,
        params: &Params,
    ) -> Result<(Value, Vec<String>), ApiError> {
        self.authenticate(method, path, params)?;
        self.throttle()?;
        self.inject_fault()?;
        if action.is_empty() {
            return Err(ApiError::new(
                MALFORMED_REQUEST,
                "MissingParameter, parameter [action] is required",
            ));
        }
        let mut state = self.lock();
        match params.get("zone").map(String::as_str) {
            None | Some("") => {
                return Err(ApiError::new(
                    MALFORMED_REQUEST,
                    "MissingParameter, parameter [zone] is required",
                ));
            }
            Some(z) if z != state.zone => {
                return Err(ApiError::new(
                    NOT_FOUND,
                    format!("ResourceNotFound, zone [{z}] not found"),
                ));
            }
            Some(_) => {}
        }
        let (value, effects) = state.dispatch(action, params)?;
        Ok((value, effects.jobs))
    }

    fn authenticate(&self, method: &str, path: &str, p: &Params) -> Result<(), ApiError> {
        let get = |k: &str| p.get(k).map(String::as_str).filter(|s| !s.is_empty());
        let missing = |k: &str| {
            ApiError::new(
                MALFORMED_REQUEST,
                format!("MissingParameter, parameter [{k}] is required"),
            )
        };
        let key = get("access_key_id").ok_or_else(|| missing("access_key_id"))?;
        let signature = get("signature").ok_or_else(|| missing("signature"))?;
        let ts = get("time_stamp").ok_or_else(|| missing("time_stamp"))?;
        if get("signature_version").is_some_and(|v| v != "1") {
            return Err(ApiError::new(
                MALFORMED_REQUEST,
                "InvalidParameter, parameter [signature_version] should be 1",
            ));
        }
        if get("signature_method").is_some_and(|m| m != signer::SIGNATURE_METHOD) {
            return Err(ApiError::new(
                MALFORMED_REQUEST,
                "InvalidParameter, parameter [signature_method] should be HmacSHA256",
            ));
        }
        if key != self.config.access_key_id {
            return Err(ApiError::new(
                AUTH_FAILED,
                format!("AuthFailure, access key [{key}] does not exist"),
            ));
        }
        let stamp = parse_time_stamp(ts).ok_or_else(|| {
            ApiError::new(
                MALFORMED_REQUEST,
                format!("InvalidParameter, parameter [time_stamp] [{ts}] should be in format YYYY-MM-DDThh:mm:ssZ"),
            )
        })?;
        let now = SystemTime::now();
        let skew = now
            .duration_since(stamp)
            .or_else(|_| stamp.duration_since(now))
            .unwrap_or_default();
        if skew > self.config.time_window {
            return Err(ApiError::new(
                REQUEST_EXPIRED,
                format!(
                    "RequestExpired, time_stamp [{ts}] differs from the server time [{}] by more than {} seconds",
                    signer::format_time_stamp(now),
                    self.config.time_window.as_secs()
                ),
            ));
        }
        if let Some(expires) = get("expires")
            && parse_time_stamp(expires).is_some_and(|e| e < now)
        {
            return Err(ApiError::new(
                REQUEST_EXPIRED,
                format!("RequestExpired, the request expired at [{expires}]"),
            ));
        }
        let canonical = signer::canonical_query(p.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let expected = signer::signature(
            &self.config.secret_access_key,
            &signer::string_to_sign(method, path, &canonical),
        );
        if expected != signature {
            return Err(ApiError::new(
                AUTH_FAILED,
                "AuthFailure, signature not matched",
            ));
        }
        Ok(())
    }

    fn throttle(&self) -> Result<(), ApiError> {
        let qps = self.config.rate_limit_qps;
        if qps <= 0.0 {
            return Ok(());
        }
        let burst = qps.max(1.0);
        let mut bucket = self.throttle.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let tokens = (bucket.0 + now.duration_since(bucket.1).as_secs_f64() * qps).min(burst);
        if tokens >= 1.0 {
            *bucket = (tokens - 1.0, now);
            Ok(())
        } else {
            *bucket = (tokens, now);
            Err(ApiError::new(
                QUOTA_EXCEEDED,
                format!(
                    "QuotaExceeded, request rate exceeded the limit [{qps}/s], please try again later"
                ),
            ))
        }
    }

    fn inject_fault(&self) -> Result<(), ApiError> {
        let rate = *self.fault_rate.lock().unwrap_or_else(|e| e.into_inner());
        if rate <= 0.0 || rand::random::<f64>() >= rate {
            return Ok(());
        }
        Err(if rand::random::<bool>() {
            ApiError::new(
                INTERNAL_ERROR,
                "InternalError, the server encountered an internal error, please try again later",
            )
        } else {
            ApiError::new(
                SERVER_BUSY,
                "ServerBusy, the server is too busy to handle the request, please try again later",
            )
        })
    }

    /// pending (job latency) → working (attach latency) → NICs change, hook → successful/failed.
    async fn run_job(self: Arc<Self>, job: String) {
        let mut shutdown = self.shutdown.clone();
        let work = async {
            tokio::time::sleep(self.real(self.config.job_latency)).await;
            self.lock().start_job(&job);
            tokio::time::sleep(self.real(self.config.attach_latency)).await;
            let (ok, events) = self.lock().apply_job(&job);
            self.notify(&events).await;
            self.lock().finish_job(&job, ok);
        };
        tokio::select! {
            _ = work => {}
            _ = shutdown.changed() => {}
        }
    }
}
