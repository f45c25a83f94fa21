//! HTTP API over the committed state, and recommendations from the live model.
//!
//! State handlers read the sled checkpoint, never the processor's in-memory state, so every answer
//! is state that would survive a crash, and the processor thread is never blocked by a reader.
//! Recommendation handlers read the live ALS model (it learns with every applied rating; after a
//! crash it is rebuilt to the last checkpoint, so a few seconds of learning may be redone). They
//! hold its read lock for one scoring pass (about a millisecond per 60 k movies).
//! Features are evaluated at the committed watermark. Errors are JSON: `{"error": "..."}` with a
//! 4xx status for bad requests and unknown ids, 500 for a store failure, 503 before the first
//! checkpoint (state routes, user and group recommendations; similar titles need only the model).
//!
//! May import: what `serve/mod.rs` allows its layer; this module uses `crate::analytics::churn_model`, `crate::analytics::segments`, `crate::core::calendar`, `crate::model::ModelHandle`, `crate::model::als`, `crate::model::recommend`, `crate::serve::Status`, `crate::serve::metrics`, `crate::state::checkpoint`, `streamflix-schemas`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use streamflix_schemas::ChurnStatus;

use crate::analytics::churn_model::{Assignment, ChurnModel, FEATURES};
use crate::analytics::insights::Report;
use crate::analytics::segments::{self, SEGMENTS};
use crate::model::recommend::{GroupStrategy, Recommender};
use crate::serve::Status;
use crate::state::checkpoint::{Meta, Store, StoreError};

pub use crate::model::ModelHandle;

/// `/targets`' default `min_p_alive`: users almost certainly gone are not worth an offer.
const DEFAULT_MIN_P_ALIVE: f64 = 0.1;

/// The server's limits and access control.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// If set, every route but `/healthz`, `/readyz` (and `/metrics`, unless `token_on_metrics`)
    /// requires `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Require the token on `/metrics` too.
    pub token_on_metrics: bool,
    /// A connection that has not sent a complete request head this long after it opened, or
    /// after its previous response, is closed (slow header reads and idle keep-alives alike).
    pub timeout: std::time::Duration,
    /// Connections served at once; more wait in the listen backlog until one closes.
    pub max_connections: usize,
    /// The least number of ratings a movie needs to be ranked by ALS (recommendations, similar
    /// titles, groups).
    pub min_movie_ratings: usize,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            token: None,
            token_on_metrics: false,
            timeout: std::time::Duration::from_secs(10),
            max_connections: 256,
            min_movie_ratings: crate::model::recommend::MIN_SUPPORT,
        }
    }
}

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The checkpoint database.
    pub store: Store,
    /// Live status (readiness).
    pub status: Arc<Status>,
    /// The live recommender; `None` when the processor runs without one (`--no-recommender`).
    pub model: Option<ModelHandle>,
    /// Prometheus metrics (also counts the HTTP requests).
    pub metrics: Arc<crate::serve::metrics::Metrics>,
    /// Access control and limits.
    pub options: Arc<HttpOptions>,
    /// The day close's table directory; `None` when no tables are written.
    pub snapshots: Option<std::path::PathBuf>,
    /// The committed churn model, decoded once per checkpoint (see [`committed_churn_model`]).
    pub churn_cache: ChurnCache,
    /// The insights report, built once per checkpoint (see [`committed_report`]).
    pub report_cache: ReportCache,
}

/// The last insights report and the checkpoint it describes.
pub type ReportCache = Arc<std::sync::Mutex<Option<(u64, Arc<Report>)>>>;

/// The last decoded churn model and the checkpoint (`Meta::checkpoints`) it was read at.
pub type ChurnCache = Arc<std::sync::Mutex<Option<(u64, Option<Arc<ChurnModel>>)>>>;

/// An error response: status + `{"error": message}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

/// The `{id}` path segment; an undecodable one is a 400 with a JSON body (axum's own rejection
/// is plain text).
pub struct IdParam(String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for IdParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(id)| IdParam(id))
            .map_err(|e| bad(format!("bad path: {}", e.body_text())))
    }
}

/// The query string as a map; an undecodable one is a 400 with a JSON body.
pub struct QueryMap(HashMap<String, String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for QueryMap {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| QueryMap(q))
            .map_err(|e| bad(format!("bad query string: {}", e.body_text())))
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

/// The routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/readyz", get(readyz))
        .route("/stats", get(stats))
        .route("/users/{id}", get(user))
        .route("/users/{id}/sessions", get(sessions))
        .route("/churn", get(churn))
        .route("/models/churn", get(churn_model))
        .route("/segments", get(segments))
        .route("/targets", get(targets))
        .route("/users/{id}/recommendations", get(recommendations))
        .route("/movies/{id}/similar", get(similar))
        .route("/groups/recommendations", get(group))
        .route("/metrics", get(metrics))
        .route("/report", get(report_html))
        .route("/report.json", get(report_json))
        .route("/snapshots", get(snapshots))
        .route("/tables/user_features", get(user_table))
        .fallback(|| async {
            ApiError(
                StatusCode::NOT_FOUND,
                "no such route; see /stats, /users/{id}, /users/{id}/sessions, /users/{id}/recommendations, \
                 /movies/{id}/similar, /groups/recommendations, /churn, /models/churn, /segments, /targets, /report, /report.json"
                    .into(),
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed: every route answers GET only".into(),
            )
        })
        .layer(axum::middleware::from_fn_with_state(state.clone(), authorize))
        .layer(axum::middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// With a token configured, answers 401 (JSON, `WWW-Authenticate: Bearer`) to a request without
/// `Authorization: Bearer <token>`, except on the probes (`/healthz`, `/readyz`) and, unless
/// told otherwise, `/metrics`. The token is compared in constant time.
async fn authorize(
    State(s): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(token) = &s.options.token else { return next.run(req).await };
    let open = match req.uri().path() {
        "/healthz" | "/readyz" => true,
        "/metrics" => !s.options.token_on_metrics,
        _ => false,
    };
    if open {
        return next.run(req).await;
    }
    // The scheme is case-insensitive (RFC 9110, 11.1), the token is not.
    let given = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .filter(|v| v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer "))
        .map_or(&b""[..], |v| &v[7..]);
    if constant_time_eq(given, token.as_bytes()) {
        return next.run(req).await;
    }
    let mut resp = ApiError(
        StatusCode::UNAUTHORIZED,
        "this route needs Authorization: Bearer <token> (the server's --http-token)".into(),
    )
    .into_response();
    resp.headers_mut()
        .insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
    resp
}

/// Whether `a == b`, in time that depends on their lengths only, not on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    // The compiler may not turn the loop into an early exit through an opaque value.
    std::hint::black_box(diff) == 0
}

/// Counts and times every request by route template (not raw path: bounded labels).
async fn track(
    State(s): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    s.metrics.http_requests.with_label_values(&[&route, resp.status().as_str()]).inc();
    s.metrics.http_seconds.with_label_values(&[&route]).observe(started.elapsed().as_secs_f64());
    resp
}

/// The wall clock, Unix milliseconds (readiness and ages are operational, not analytic).
fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

async fn metrics(State(s): State<AppState>) -> Response {
    s.metrics.state_disk.set(s.store.size_on_disk() as i64);
    let input = &s.status.input;
    s.metrics.input_connected.set(i64::from(input.connected()));
    s.metrics.input_fetch_age.set(input.fetch_age(now_ms()).unwrap_or(0.0));
    if let Ok(m) = model(&s) {
        s.metrics.set_model(&m);
    }
    let body = s.metrics.render();
    ([(axum::http::header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body).into_response()
}

/// The day close's tables: the closed partitions (`dt`, with `_SUCCESS`) of the daily tables, and
/// per table how many are closed, the first and last, and the ones being filled or left
/// incomplete at the end of a finite input.
async fn snapshots(State(s): State<AppState>) -> ApiResult {
    let Some(dir) = s.snapshots.clone() else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "no snapshot tables are written (see --snapshots)".into(),
        ));
    };
    let listing = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || crate::serve::snapshots::list(&dir)
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("reading {}: {e}", dir.display())))?;
    // The closed partitions of the daily tables (all alike), listed once; per table, counts.
    let days = listing
        .iter()
        .find(|t| crate::analytics::tables::Table::from_name(t.table).is_some_and(|t| t.is_daily()))
        .map(|t| t.closed.clone())
        .unwrap_or_default();
    let tables: Vec<Value> = listing
        .into_iter()
        .map(|t| {
            json!({
                "table": t.table,
                "closed": t.closed.len(),
                "first": t.closed.first(),
                "last": t.closed.last(),
                "incomplete": t.incomplete,
            })
        })
        .collect();
    Ok(Json(json!({
        "dir": dir.display().to_string(),
        "last_closed": days.last(),
        "days": days,
        "tables": tables,
    })))
}

/// The insights report at the committed checkpoint, from the cache when no checkpoint landed
/// since it was built (building reads every user: well under a second for the 162,541 of the
/// 25 M state).
async fn committed_report(s: AppState) -> Result<Arc<Report>, ApiError> {
    let meta = committed(&s.store)?;
    if let Some((at, r)) = s.report_cache.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        if *at == meta.checkpoints {
            return Ok(r.clone());
        }
    }
    let built = tokio::task::spawn_blocking(move || -> Result<Arc<Report>, ApiError> {
        let (at, r) = crate::serve::report::committed_report(&s.store)?
            .ok_or_else(|| ApiError(StatusCode::SERVICE_UNAVAILABLE, "no checkpoint yet".into()))?;
        let r = Arc::new(r);
        *s.report_cache.lock().unwrap_or_else(|e| e.into_inner()) = Some((at, r.clone()));
        Ok(r)
    })
    .await;
    built.map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

/// The insights report as one HTML page (inline SVG charts, no scripts).
async fn report_html(State(s): State<AppState>) -> Response {
    match committed_report(s).await {
        Ok(r) => axum::response::Html(crate::analytics::report_html::html(&r)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The insights report's numbers (the JSON `streamflix report --format json` prints).
async fn report_json(State(s): State<AppState>) -> ApiResult {
    let r = committed_report(s).await?;
    Ok(Json(
        serde_json::to_value(&*r).map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?,
    ))
}

/// The committed user table (every user, features at the committed watermark, the columns of
/// `user_features`) as an Arrow IPC stream: `pyarrow.ipc.open_stream`.
async fn user_table(State(s): State<AppState>) -> Response {
    let built = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, ApiError> {
        let store = &s.store;
        let m = committed(store)?;
        let churn = committed_churn_model(&s, &m)?;
        let as_of = m.watermark.unwrap_or(0);
        let mut rows = Vec::with_capacity(m.users as usize);
        for kv in store.all_users() {
            let (u, st) = kv?;
            let mut row = st.activity.row(u, as_of, st.churn.churned, m.genres.len());
            row.segment = churn.as_ref().and_then(|c| c.segment_of(u));
            rows.push(row);
        }
        crate::analytics::tables::user_features_ipc(&rows, &m.genres)
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("encoding Arrow IPC: {e}")))
    })
    .await;
    match built {
        Ok(Ok(bytes)) => ([(axum::http::header::CONTENT_TYPE, "application/vnd.apache.arrow.stream")], bytes)
            .into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(e) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// A connection lives at most this many `--http-timeout`s (5 minutes by default), however busy.
const CONNECTION_LIFETIMES: u32 = 30;

/// Serves the routes on `listener` until `shutdown` resolves, then lets in-flight requests finish
/// (for up to 5 s). HTTP/1.1 through hyper, with `state.options`' limits: at most
/// `max_connections` connections at once (the rest wait in the listen backlog), each closed when
/// it has not sent a complete request head within `timeout` of opening or of its last response,
/// and after [`CONNECTION_LIFETIMES`] × `timeout` in any case.
///
/// # Errors
/// The server failed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let options = state.options.clone();
    let app = router(state);
    let slots = Arc::new(tokio::sync::Semaphore::new(options.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors and the like: the listener itself is fine.
                Err(e) => {
                    tracing::warn!("http: accepting a connection failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(options.timeout)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        let lifetime = options.timeout * CONNECTION_LIFETIMES;
        tokio::spawn(async move {
            // Timeouts and clients going away end connections: nothing to report. A client that
            // stops reading a response would hold its slot for ever: the lifetime bounds it.
            let _ = tokio::time::timeout(lifetime, conn).await;
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(std::time::Duration::from_secs(5), graceful.shutdown()).await.is_err() {
        tracing::warn!("http: connections still open 5 s after shutdown; they close with the server");
    }
    Ok(())
}

fn committed(store: &Store) -> Result<Meta, ApiError> {
    store.meta()?.ok_or_else(|| ApiError(StatusCode::SERVICE_UNAVAILABLE, "no checkpoint yet".into()))
}

/// 200 once a checkpoint is loaded or written and, in Kafka mode, while the broker answers;
/// otherwise 503 with the reason.
async fn readyz(State(s): State<AppState>) -> Response {
    if !s.status.ready.load(Ordering::Relaxed) {
        return ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no checkpoint loaded or written yet".into(),
        )
        .into_response();
    }
    match s.status.input.stalled(now_ms()) {
        Some(reason) => ApiError(StatusCode::SERVICE_UNAVAILABLE, reason).into_response(),
        None => Json(json!({ "status": "ready" })).into_response(),
    }
}

fn iso(ts: Option<i64>) -> Value {
    ts.map_or(Value::Null, |t| Value::String(crate::core::calendar::format_datetime(t)))
}

async fn stats(State(s): State<AppState>) -> ApiResult {
    let m = committed(&s.store)?;
    let c = &m.counters;
    let now_ms = now_ms();
    let recommender = match model(&s) {
        Err(_) => json!({ "enabled": false }),
        Ok(model) => {
            let (als, st) = (model.als(), model.stats());
            json!({
            "enabled": true,
            "ratings": als.ratings(),
            "users": als.side(crate::model::als::Which::Users).len(),
            "movies": als.side(crate::model::als::Which::Items).len(),
            "rank": als.rank(),
            "sweeps": als.sweeps_done(),
            "prequential_scored": st.scored,
            "prequential_rmse": st.rmse(),
            "prequential_mae": st.mae(),
            "update_latency_p50_us_at_most": st.latency_quantile_us(0.5),
            "update_latency_p99_us_at_most": st.latency_quantile_us(0.99),
            })
        }
    };
    Ok(Json(json!({
        "watermark": m.watermark,
        "watermark_utc": iso(m.watermark),
        "users": m.users,
        "events": c.ratings + c.tags,
        "ratings": c.ratings,
        "tags": c.tags,
        "heartbeats": c.heartbeats,
        "dead_letters": c.dead_total(),
        "dead_letters_by_reason": c.dead_letters,
        "sessions_closed": c.sessions_closed,
        "binge_sessions": c.binge_sessions,
        "churned": c.churned_now,
        "churned_alerts": c.churned_alerts,
        "reactivated_alerts": c.reactivated_alerts,
        "finished": m.finished,
        "checkpoints": m.checkpoints,
        "checkpoint_age_seconds": (now_ms - m.written_at_ms).max(0) as f64 / 1000.0,
        "state_bytes_on_disk": s.store.size_on_disk(),
        "mode": m.mode,
        "partitions": m.partitions,
        "config": m.config,
        "recommender": recommender,
    })))
}

fn user_id(raw: &str) -> Result<u32, ApiError> {
    parse_id(raw, "user")
}

/// An id: decimal digits only (no sign, no spaces), at most `u32::MAX`.
fn parse_id(raw: &str, what: &str) -> Result<u32, ApiError> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(format!("{what} id must be a non-negative integer, got {raw:?}")));
    }
    raw.parse().map_err(|_| bad(format!("{what} id {raw} is beyond the largest id, {}", u32::MAX)))
}

fn check_params(q: &HashMap<String, String>, allowed: &[&str]) -> Result<(), ApiError> {
    match q.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(bad(format!("unknown query parameter {k:?}; allowed: {}", allowed.join(", ")))),
        None => Ok(()),
    }
}

async fn user(State(s): State<AppState>, IdParam(id): IdParam) -> ApiResult {
    let id = user_id(&id)?;
    let m = committed(&s.store)?;
    let st =
        s.store.user(id)?.ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("user {id} not seen")))?;
    let as_of = m.watermark.unwrap_or(st.activity.last);
    let features = st.features(as_of, &m.genres);
    let open: Vec<Value> = st
        .sessions
        .open()
        .iter()
        .map(|o| json!({ "start": o.start, "end": o.end, "events": o.events, "ratings": o.ratings }))
        .collect();
    Ok(Json(json!({
        "user_id": id,
        "status": if st.churn.churned { "churned" } else { "active" },
        "churn_episodes": st.churn.episodes,
        "watermark": m.watermark,
        "features": features,
        "open_sessions": open,
        "last_alert": s.store.last_alert(id)?,
        "segment": committed_churn_model(&s, &m)?.and_then(|model| {
            let a = model.assignment(id)?;
            Some(target_json(a, model.segmentation.as_ref().map(|s| s.day)))
        }),
    })))
}

/// The churn model as of the committed checkpoint: settings, coefficients, the last MBG/NBD fit.
async fn churn_model(State(s): State<AppState>) -> ApiResult {
    let model = require_churn_model(
        &s,
        "no churn model in this state: the processor runs with --no-churn-model, or has not closed a day since it started with the model",
    )?;
    Ok(Json(model.report()))
}

/// The committed churn model, or a 404 saying `missing`.
fn require_churn_model(s: &AppState, missing: &str) -> Result<Arc<ChurnModel>, ApiError> {
    let meta = committed(&s.store)?;
    committed_churn_model(s, &meta)?.ok_or_else(|| ApiError(StatusCode::NOT_FOUND, missing.into()))
}

/// The 404 of `/segments` and `/targets` before the first segmentation.
fn no_segments() -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "no segments yet: users are segmented at each month's last close".into())
}

/// The churn model as committed (`meta` read first, so the model is at least that new), if
/// there is one; decoded once per checkpoint, not per request.
fn committed_churn_model(s: &AppState, meta: &Meta) -> Result<Option<Arc<ChurnModel>>, ApiError> {
    if let Some((at, model)) = s.churn_cache.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        if *at == meta.checkpoints {
            return Ok(model.clone());
        }
    }
    let model = match s.store.churn_model()? {
        None => None,
        Some(bytes) => Some(Arc::new(
            ChurnModel::from_bytes(&bytes)
                .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?,
        )),
    };
    *s.churn_cache.lock().unwrap_or_else(|e| e.into_inner()) = Some((meta.checkpoints, model.clone()));
    Ok(model)
}

/// The RFM segments at the last month end (users active in the year before it): breakpoints,
/// sizes, mean inputs, moves.
async fn segments(State(s): State<AppState>) -> ApiResult {
    let model =
        require_churn_model(&s, "no churn model in this state (--no-churn-model): segments come with it")?;
    model.segments_report().map(Json).ok_or_else(no_segments)
}

/// A segmented user as `/targets` and `/users/{id}` show them.
fn target_json(a: &Assignment, day: Option<i64>) -> Value {
    let [r, f, m, seg] = a.scores;
    let reasons: Vec<&str> =
        a.reasons.iter().filter(|&&i| i > 0).map(|&i| FEATURES[usize::from(i)]).collect();
    let segment = segments::name(seg);
    let reason = match a.risk {
        Some((risk, alive)) => format!(
            "{segment} (R {r}, F {f}, M {m}){}: churn_risk {risk:.2}{}, P(alive) {alive:.2}",
            if a.churned { ", churned" } else { "" },
            if reasons.is_empty() { String::new() } else { format!(" driven by {}", reasons.join(", ")) },
        ),
        None => format!("{segment} (R {r}, F {f}, M {m}); not scored yet (no MBG/NBD fit)"),
    };
    json!({
        "user_id": a.user,
        "segment": segment,
        "r_score": r,
        "f_score": f,
        "m_score": m,
        "status": if a.churned { "churned" } else { "active" },
        "churn_risk": a.risk.map(|r| r.0),
        "p_alive": a.risk.map(|r| r.1),
        "priority": a.priority(),
        "reasons": reasons,
        "reason": reason,
        "as_of": day.map(crate::core::calendar::day_label),
    })
}

/// Users worth an offer: `?segment=` (a name from `/segments`, any case; default all),
/// `?min_p_alive=` (0–1, default 0.1), `?limit=` (default 20), by value × risk.
async fn targets(State(s): State<AppState>, QueryMap(q): QueryMap) -> ApiResult {
    check_params(&q, &["segment", "min_p_alive", "limit"])?;
    let limit = count(&q, "limit", 20, 10_000)?;
    let min_p_alive = match q.get("min_p_alive") {
        None => DEFAULT_MIN_P_ALIVE,
        Some(v) => match v.parse::<f64>() {
            Ok(p) if (0.0..=1.0).contains(&p) => p,
            _ => return Err(bad(format!("min_p_alive must be a number from 0 to 1, got {v:?}"))),
        },
    };
    let segment = match q.get("segment") {
        None => None,
        Some(v) => Some(usize::from(
            segments::by_name(v)
                .ok_or_else(|| bad(format!("unknown segment {v:?}; one of: {}", SEGMENTS.join(", "))))?,
        )),
    };
    let model =
        require_churn_model(&s, "no churn model in this state (--no-churn-model): targets come with it")?;
    let seg = model.segmentation.as_ref().ok_or_else(no_segments)?;
    let targets: Vec<Value> = model
        .targets(segment, min_p_alive, limit)
        .into_iter()
        .map(|a| target_json(a, Some(seg.day)))
        .collect();
    Ok(Json(json!({
        "as_of": crate::core::calendar::day_label(seg.day),
        "segment": segment.map(|i| SEGMENTS[i]),
        "min_p_alive": min_p_alive,
        "ranking": "priority = (F + M) / 10 × churn_risk, highest first; ties by user id",
        "targets": targets,
    })))
}

async fn sessions(State(s): State<AppState>, IdParam(id): IdParam, QueryMap(q): QueryMap) -> ApiResult {
    let id = user_id(&id)?;
    check_params(&q, &["limit"])?;
    let limit = count(&q, "limit", 20, 1000)?;
    let meta = committed(&s.store)?;
    if s.store.user(id)?.is_none() {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("user {id} not seen")));
    }
    let list = s.store.sessions(id, limit, &meta.genres)?;
    Ok(Json(json!({ "user_id": id, "sessions": list })))
}

async fn churn(State(s): State<AppState>, QueryMap(q): QueryMap) -> ApiResult {
    check_params(&q, &["status", "limit", "after"])?;
    let status = match q.get("status").map(String::as_str) {
        None | Some("churned") => Some(ChurnStatus::Churned),
        Some("reactivated") => Some(ChurnStatus::Reactivated),
        Some("any") => None,
        Some(other) => return Err(bad(format!("status must be churned, reactivated or any, got {other:?}"))),
    };
    let limit = count(&q, "limit", 100, 10_000)?;
    let after = q.get("after").map(|a| user_id(a)).transpose()?;
    let m = committed(&s.store)?;
    let alerts = s.store.alerts(status, limit, after)?;
    let next = (alerts.len() == limit).then(|| alerts.last().map(|a| a.user_id)).flatten();
    Ok(Json(json!({
        "watermark": m.watermark,
        "churned_now": m.counters.churned_now,
        "users": alerts,
        "next_after": next,
    })))
}

/// The live model, or a 503 when the processor runs without one.
fn model(s: &AppState) -> Result<std::sync::RwLockReadGuard<'_, Recommender>, ApiError> {
    let m = s.model.as_ref().ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the recommender is off: this processor runs with --no-recommender".into(),
        )
    })?;
    // A poisoned lock means a reader panicked; the model itself is intact.
    Ok(m.read().unwrap_or_else(std::sync::PoisonError::into_inner))
}

fn count(q: &HashMap<String, String>, name: &str, default: usize, max: usize) -> Result<usize, ApiError> {
    match q.get(name) {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(bad(format!("{name} must be an integer from 1 to {max}, got {v:?}"))),
        },
    }
}

fn flag(q: &HashMap<String, String>, name: &str, default: bool) -> Result<bool, ApiError> {
    match q.get(name).map(String::as_str) {
        None => Ok(default),
        Some("true" | "1" | "yes") => Ok(true),
        Some("false" | "0" | "no") => Ok(false),
        Some(v) => Err(bad(format!("{name} must be true or false, got {v:?}"))),
    }
}

/// Genres of the movies the committed state has the user rating, as a mask (`None`: user not
/// seen). The live model may lag behind the state, or not know a user who only tagged.
fn stored_genres(s: &AppState, user: u32) -> Result<Option<u64>, ApiError> {
    let Some(st) = s.store.user(user)? else { return Ok(None) };
    let counts = st.activity.genre_counts.iter().enumerate();
    Ok(Some(counts.filter(|(_, &c)| c > 0).fold(0u64, |mask, (i, _)| mask | (1 << i))))
}

async fn recommendations(
    State(s): State<AppState>,
    IdParam(id): IdParam,
    QueryMap(q): QueryMap,
) -> ApiResult {
    let id = user_id(&id)?;
    check_params(&q, &["n", "genre", "exclude_rated"])?;
    let n = count(&q, "n", 10, 1000)?;
    let exclude_rated = flag(&q, "exclude_rated", true)?;
    committed(&s.store)?;
    let stored = stored_genres(&s, id)?;
    let model = model(&s)?;
    let genre = match q.get("genre") {
        None => None,
        Some(g) => Some(model.catalog().genre_bit(g).ok_or_else(|| {
            bad(format!("unknown genre {g:?}; genres: {}", model.catalog().genre_names().join(", ")))
        })?),
    };
    let rated = model.ratings_of(id);
    if stored.is_none() && rated == 0 {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("user {id} not seen")));
    }
    let recs = model.for_user(id, n, genre, exclude_rated, stored.unwrap_or(0), s.options.min_movie_ratings);
    Ok(Json(json!({ "user_id": id, "ratings": rated, "recommendations": recs })))
}

async fn similar(State(s): State<AppState>, IdParam(id): IdParam, QueryMap(q): QueryMap) -> ApiResult {
    let id = parse_id(&id, "movie")?;
    check_params(&q, &["n"])?;
    let n = count(&q, "n", 10, 1000)?;
    let model = model(&s)?;
    let Some(recs) = model.similar(id, n, s.options.min_movie_ratings) else {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("movie {id} is not in the catalog")));
    };
    Ok(Json(json!({
        "movie_id": id,
        "title": model.catalog().title(id),
        "genres": model.catalog().names(model.catalog().genres_of(id).unwrap_or(0)),
        "similar": recs,
    })))
}

async fn group(State(s): State<AppState>, QueryMap(q): QueryMap) -> ApiResult {
    check_params(&q, &["users", "strategy", "weights", "n"])?;
    let n = count(&q, "n", 10, 1000)?;
    let users: Vec<u32> = q
        .get("users")
        .ok_or_else(|| bad("users is required: a comma-separated list of 2 to 20 user ids"))?
        .split(',')
        .map(|u| user_id(u.trim()))
        .collect::<Result<_, _>>()?;
    if !(2..=20).contains(&users.len()) {
        return Err(bad(format!("a group has 2 to 20 users, got {}", users.len())));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(d) = users.iter().find(|u| !seen.insert(**u)) {
        return Err(bad(format!("user {d} is listed twice")));
    }
    let strategy = match q.get("strategy").map(String::as_str) {
        None | Some("average") => GroupStrategy::Average,
        Some("least_misery") => GroupStrategy::LeastMisery,
        Some(other) => return Err(bad(format!("strategy must be average or least_misery, got {other:?}"))),
    };
    let weights: Vec<f64> = match q.get("weights") {
        None => vec![1.0; users.len()],
        Some(w) => {
            let w: Vec<f64> = w
                .split(',')
                .map(|x| x.trim().parse::<f64>().ok().filter(|v| *v > 0.0 && *v <= 1e6))
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    bad(format!("weights must be numbers greater than 0 and at most 1e6, got {w:?}"))
                })?;
            if w.len() != users.len() {
                return Err(bad(format!("{} weights for {} users", w.len(), users.len())));
            }
            w
        }
    };
    committed(&s.store)?;
    let model = model(&s)?;
    for &u in &users {
        if model.ratings_of(u) == 0 && s.store.user(u)?.is_none() {
            return Err(ApiError(StatusCode::NOT_FOUND, format!("user {u} not seen")));
        }
    }
    let members: Vec<(u32, f64)> = users.iter().copied().zip(weights.iter().copied()).collect();
    let tastes = model.tastes(&users);
    let recs = model.for_group(&members, &tastes, strategy, n, s.options.min_movie_ratings);
    Ok(Json(json!({
        "users": users,
        "weights": weights,
        "taste_genres": tastes.iter().map(|&t| model.catalog().names(t)).collect::<Vec<_>>(),
        "recommendations": recs,
    })))
}
