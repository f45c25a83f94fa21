//! HTTP API over the committed state.
//!
//! Handlers read the sled checkpoint, never the processor's in-memory state, so every answer is
//! state that would survive a crash, and the processor thread is never blocked by a reader.
//! Features are evaluated at the committed watermark. Errors are JSON: `{"error": "..."}` with a
//! 4xx status for bad requests and unknown ids, 500 for a store failure, 503 before the first
//! checkpoint.

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

use crate::checkpoint::{Meta, Store, StoreError};
use crate::pipeline::Status;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The checkpoint database.
    pub store: Store,
    /// Live status (readiness).
    pub status: Arc<Status>,
}

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
        .fallback(|| async {
            ApiError(
                StatusCode::NOT_FOUND,
                "no such route; see /stats, /users/{id}, /users/{id}/sessions, /churn".into(),
            )
        })
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` resolves, then finishes in-flight requests.
///
/// # Errors
/// The server failed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}

fn committed(store: &Store) -> Result<Meta, ApiError> {
    store.meta()?.ok_or_else(|| ApiError(StatusCode::SERVICE_UNAVAILABLE, "no checkpoint yet".into()))
}

async fn readyz(State(s): State<AppState>) -> Response {
    if s.status.ready.load(Ordering::Relaxed) {
        Json(json!({ "status": "ready" })).into_response()
    } else {
        ApiError(StatusCode::SERVICE_UNAVAILABLE, "not ready: no checkpoint loaded or written yet".into())
            .into_response()
    }
}

fn iso(ts: Option<i64>) -> Value {
    ts.map_or(Value::Null, |t| Value::String(streamflix_replay::time::format_datetime(t)))
}

async fn stats(State(s): State<AppState>) -> ApiResult {
    let m = committed(&s.store)?;
    let c = &m.counters;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
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
    })))
}

fn user_id(raw: &str) -> Result<u32, ApiError> {
    raw.parse().map_err(|_| bad(format!("user id must be a non-negative integer, got {raw:?}")))
}

fn limit(q: &HashMap<String, String>, default: usize, max: usize) -> Result<usize, ApiError> {
    match q.get("limit") {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(bad(format!("limit must be an integer from 1 to {max}, got {v:?}"))),
        },
    }
}

fn check_params(q: &HashMap<String, String>, allowed: &[&str]) -> Result<(), ApiError> {
    match q.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(bad(format!("unknown query parameter {k:?}; allowed: {}", allowed.join(", ")))),
        None => Ok(()),
    }
}

async fn user(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
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
    })))
}

async fn sessions(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let id = user_id(&id)?;
    check_params(&q, &["limit"])?;
    let limit = limit(&q, 20, 1000)?;
    committed(&s.store)?;
    if s.store.user(id)?.is_none() {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("user {id} not seen")));
    }
    let list = s.store.sessions(id, limit)?;
    Ok(Json(json!({ "user_id": id, "sessions": list })))
}

async fn churn(State(s): State<AppState>, Query(q): Query<HashMap<String, String>>) -> ApiResult {
    check_params(&q, &["status", "limit", "after"])?;
    let status = match q.get("status").map(String::as_str) {
        None | Some("churned") => Some(ChurnStatus::Churned),
        Some("reactivated") => Some(ChurnStatus::Reactivated),
        Some("any") => None,
        Some(other) => return Err(bad(format!("status must be churned, reactivated or any, got {other:?}"))),
    };
    let limit = limit(&q, 100, 10_000)?;
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
