//! The admin API's routes: authentication and time limit around every
//! request, then status, metrics, history and commands.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use failover_core::{Command, Health, PromotionPhase, TrafficReport};
use serde_json::{json, Map, Value};

use super::{AdminState, Peer};
use crate::runtime::status::{NodeRole, RuntimeStatus};
use crate::RuntimeError;

/// Records read from the end of the audit log for `/history`, at most.
const HISTORY_MAX: usize = 1000;
/// How much of the audit log's end `/history` reads, bytes.
const HISTORY_TAIL: u64 = 8 << 20;

/// The caller, as authenticated: the name of its token.
#[derive(Clone, Debug)]
struct Caller(Arc<str>);

/// Every route, behind the time limit and the authentication check (in
/// that order, so a client that never finishes its body is cut off too).
pub(super) fn router(state: Arc<AdminState>, max_body: usize) -> Router {
    let mut commands = Router::new();
    for kind in CommandKind::ALL {
        commands = commands.route(
            kind.path(),
            post(
                move |State(state): State<Arc<AdminState>>,
                      Extension(caller): Extension<Caller>,
                      peer: Option<Extension<Peer>>,
                      body: Bytes| async move {
                    command(&state, kind, &caller, peer.map(|p| p.0), &body).await
                },
            ),
        );
    }
    Router::new()
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/history", get(history))
        .route("/traffic", post(traffic))
        .nest("/commands", commands)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint: see GET /status, /metrics, /history, POST /traffic and POST /commands/{drain,undrain,switchover,force-promote,pause,resume,abort}") })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(middleware::from_fn_with_state(state.clone(), time_limit))
        .with_state(state)
}

/// A JSON error answer, counted by status.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    metrics::counter!("failover_admin_refusals_total", "status" => status.as_u16().to_string())
        .increment(1);
    (status, json_body(&json!({"error": message.into()}))).into_response()
}

fn json_body(value: &Value) -> ([(header::HeaderName, HeaderValue); 1], String) {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        value.to_string(),
    )
}

async fn time_limit(State(state): State<Arc<AdminState>>, req: Request, next: Next) -> Response {
    let limit = state.request_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the request took over {} ms (AdminConfig::request_timeout)",
                limit.as_millis()
            ),
        ),
    }
}

async fn authenticate(
    State(state): State<Arc<AdminState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let caller = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| state.auth.caller(value.as_bytes()));
    let Some(caller) = caller else {
        let peer = req.extensions().get::<Peer>().map(|p| p.0);
        tracing::warn!(?peer, path = %req.uri().path(), "admin API: request without a valid token refused");
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token: send `Authorization: Bearer <token>`",
        );
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    };
    req.extensions_mut().insert(Caller(caller.into()));
    next.run(req).await
}

// ---------------------------------------------------------------------------
// POST /traffic

/// Counts in one traffic report are at most this (a report covers one
/// reporting period of one instance).
const TRAFFIC_MAX_COUNT: u64 = 10_000_000;

/// `POST /traffic`: one aggregate of real request outcomes from a service
/// instance in another process (failover-tower's `AdminTrafficSink`), fed
/// to the controller as `Input::Traffic` stamped with this process's clock.
/// Every controller takes them — not only the leader — so that each keeps
/// the same passive-health window and a new leader decides on it at once.
async fn traffic(
    State(state): State<Arc<AdminState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Response {
    let report = match parse_traffic(&state, &body) {
        Ok(report) => report,
        Err(message) => {
            tracing::warn!(caller = %caller.0, error = %message, "admin API: traffic report refused");
            return error(StatusCode::BAD_REQUEST, message);
        }
    };
    if state.policy.passive.is_none() {
        return error(
            StatusCode::CONFLICT,
            "this controller's policy has no `passive` section: traffic reports are not used (set policy.passive)",
        );
    }
    match state.handle.report_traffic(report).await {
        Ok(()) => {
            metrics::counter!("failover_admin_traffic_reports_total", "region" => state.topology.region(report.region).name.clone())
                .increment(1);
            (StatusCode::ACCEPTED, json_body(&json!({"accepted": true}))).into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// The body of `POST /traffic`: `{"region": "us-east", "requests": 120,
/// "errors": 3, "slow": 0, "consecutive_errors": 0}` (`slow` and
/// `consecutive_errors` default to 0).
fn parse_traffic(state: &AdminState, body: &[u8]) -> Result<TrafficReport, String> {
    let fields = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => map,
        Ok(other) => {
            return Err(format!(
                "the body must be a JSON object, not {}",
                json_type(&other)
            ))
        }
        Err(e) => return Err(format!("the body is not JSON: {e}")),
    };
    const FIELDS: [&str; 5] = ["region", "requests", "errors", "slow", "consecutive_errors"];
    if let Some(key) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!(
            "unknown field `{key}`: a traffic report takes {}",
            FIELDS.map(|f| format!("`{f}`")).join(", ")
        ));
    }
    let name = match fields.get("region") {
        Some(Value::String(name)) => name,
        Some(other) => {
            return Err(format!(
                "`region` must be a string, not {}",
                json_type(other)
            ))
        }
        None => return Err("`region` is required: the region that served the requests".into()),
    };
    let region = state.topology.region_id(name).ok_or_else(|| {
        let known: Vec<&str> = state
            .topology
            .regions()
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        format!(
            "`region`: {name:?} is not a region of the topology ({})",
            known.join(", ")
        )
    })?;
    let count = |field: &str, required: bool| -> Result<u32, String> {
        match fields.get(field) {
            None if !required => Ok(0),
            None => Err(format!("`{field}` is required")),
            Some(value) => value
                .as_u64()
                .filter(|n| *n <= TRAFFIC_MAX_COUNT)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    format!("`{field}` must be a whole number from 0 to {TRAFFIC_MAX_COUNT}, not {value}")
                }),
        }
    };
    let requests = count("requests", true)?;
    let errors = count("errors", true)?;
    let slow = count("slow", false)?;
    let consecutive_errors = count("consecutive_errors", false)?;
    if errors > requests {
        return Err(format!(
            "`errors` ({errors}) must not exceed `requests` ({requests})"
        ));
    }
    if slow > requests {
        return Err(format!(
            "`slow` ({slow}) must not exceed `requests` ({requests})"
        ));
    }
    Ok(TrafficReport {
        region,
        at: std::time::Instant::now(),
        requests,
        errors,
        slow,
        consecutive_errors,
    })
}

// ---------------------------------------------------------------------------
// GET /status

async fn status(State(state): State<Arc<AdminState>>) -> Response {
    let status = state.handle.status();
    let health = state.handle.health().err().map(|e| e.to_string());
    let value = status_json(&state, &status, health);
    (StatusCode::OK, json_body(&value)).into_response()
}

fn status_json(state: &AdminState, status: &RuntimeStatus, health: Option<String>) -> Value {
    let topology = &state.topology;
    let c = &status.controller;
    let applied = status.router.applied.as_ref();
    let regions: Vec<Value> = c
        .regions
        .iter()
        .map(|r| {
            let applied_weight = applied
                .and_then(|plan| plan.weights.iter().find(|w| w.region == r.id))
                .map(|w| w.weight);
            json!({
                "name": topology.region(r.id).name,
                "health": match r.health {
                    Health::Up => "up",
                    Health::Down => "down",
                    Health::Unknown => "unknown",
                },
                "desired_weight": r.weight,
                // The share of peak load it can carry (1.0 = all of peak).
                "capacity": topology.region(r.id).capacity,
                "applied_weight": applied_weight,
                "drained": r.drained,
                "ramp_step": r.ramp_step,
                "held": r.held_until.is_some(),
            })
        })
        .collect();
    let nodes: Vec<Value> = status
        .nodes
        .iter()
        .map(|n| {
            let node = topology.node(n.node);
            let (role, fenced, epoch) = match n.role {
                NodeRole::Unknown => ("unknown", None, None),
                NodeRole::Unreachable => ("unreachable", None, None),
                NodeRole::Primary { epoch, fenced } => {
                    ("primary", Some(fenced), epoch.map(|e| e.0))
                }
                NodeRole::Replica => ("replica", None, None),
            };
            json!({
                "name": node.name,
                "region": node.region,
                "role": role,
                "writer": c.writer == Some(n.node),
                "synchronous_standby": c.synchronous.contains(n.node),
                "fenced": fenced,
                "epoch": epoch,
                "lag_bytes": n.lag_bytes,
                "replay_delay_s": n.replay_delay.map(|d| d.as_secs_f64()),
                "observed_unix_ms": n.observed_at
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_millis() as u64),
            })
        })
        .collect();
    json!({
        "service": topology.service(),
        "regions": regions,
        "plan": {
            "desired_generation": c.plan.as_ref().map(|p| p.generation),
            "applied_generation": applied.map(|p| p.generation),
            "applied": status.plan_applied(),
            "router_failed_attempts": status.router.failed_attempts,
            "router_last_failure": status.router.last_failure,
        },
        "writer": c.writer.map(|n| topology.node(n).name.clone()),
        // The standbys the writer record says the writer requires: each may
        // be promoted without waiting for the writer's guard lease.
        "synchronous_standbys": c
            .synchronous
            .iter()
            .map(|n| topology.node(n).name.clone())
            .collect::<Vec<_>>(),
        "epoch": c.epoch.0,
        "leader": {
            "coordinated": state.handle.coordinated,
            "leading": c.leader.is_some(),
            "token": c.leader.map(|t| t.0),
        },
        "paused": c.paused,
        "promotion": promotion_json(state, c.promotion),
        "nodes": nodes,
        "recent_events": status.recent_events,
        "probe_results_handled": status.probe_results_handled,
        "traffic_reports_handled": status.traffic_reports_handled,
        "health": match health {
            None => Value::from("ok"),
            Some(error) => Value::from(error),
        },
    })
}

fn promotion_json(state: &AdminState, phase: PromotionPhase) -> Value {
    let mut value = promotion_phase_json(state, phase);
    // The planner's bound on the rest of the promotion from entering this
    // phase (services use it for `Retry-After` while the writer moves).
    if let (Some(bound), Some(object)) = (
        failover_core::objectives::promotion_bound(&state.policy, phase),
        value.as_object_mut(),
    ) {
        object.insert("bound_ms".to_owned(), Value::from(bound.as_millis() as u64));
    }
    value
}

fn promotion_phase_json(state: &AdminState, phase: PromotionPhase) -> Value {
    let name = |n: failover_core::NodeId| state.topology.node(n).name.clone();
    match phase {
        PromotionPhase::Idle => json!({"phase": "idle"}),
        PromotionPhase::Draining { node, candidate } => {
            json!({"phase": "draining", "node": name(node), "candidate": name(candidate)})
        }
        PromotionPhase::Fencing { node, candidate } => {
            json!({"phase": "fencing", "node": name(node), "candidate": name(candidate)})
        }
        PromotionPhase::Claiming { node } => json!({"phase": "claiming", "node": name(node)}),
        PromotionPhase::CatchingUp { node } => json!({"phase": "catching_up", "node": name(node)}),
        PromotionPhase::Promoting { node } => json!({"phase": "promoting", "node": name(node)}),
        PromotionPhase::Refused { node } => json!({"phase": "refused", "node": name(node)}),
        PromotionPhase::Unproven { node, candidate } => {
            json!({"phase": "unproven", "node": name(node), "candidate": name(candidate)})
        }
        PromotionPhase::NeedsOperator { writer } => {
            json!({"phase": "needs_operator", "node": name(writer)})
        }
        other => json!({"phase": format!("{other:?}")}),
    }
}

// ---------------------------------------------------------------------------
// GET /metrics

async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    match &state.metrics {
        Ok(handle) => {
            handle.run_upkeep();
            (
                StatusCode::OK,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                )],
                handle.render(),
            )
                .into_response()
        }
        Err(message) => error(StatusCode::NOT_IMPLEMENTED, message.clone()),
    }
}

// ---------------------------------------------------------------------------
// GET /history

/// Audit records `/history` shows.
const HISTORY_KINDS: [&str; 6] = [
    "admin_command",
    "command",
    "event",
    "action",
    "action_done",
    "action_failed",
];

async fn history(State(state): State<Arc<AdminState>>, req: Request) -> Response {
    let limit = match history_limit(req.uri().query()) {
        Ok(limit) => limit,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let Some(path) = state.audit_path.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            "no audit log: start the runtime with RuntimeBuilder::audit_log to keep a history",
        );
    };
    let read = tokio::task::spawn_blocking(move || read_tail(&path, HISTORY_TAIL)).await;
    let text = match read {
        Ok(Ok(text)) => text,
        Ok(Err(e)) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read the audit log: {e}"),
            )
        }
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading the audit log failed: {e}"),
            )
        }
    };
    let mut records: Vec<Value> = text
        .lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|record| {
            record["record"]
                .as_str()
                .is_some_and(|kind| HISTORY_KINDS.contains(&kind))
        })
        .take(limit)
        .collect();
    records.reverse();
    (StatusCode::OK, json_body(&json!({ "records": records }))).into_response()
}

fn history_limit(query: Option<&str>) -> Result<usize, String> {
    let mut limit = 100;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "limit" => {
                limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=HISTORY_MAX).contains(n))
                    .ok_or_else(|| {
                        format!("query `limit`: `{value}` is not a whole number from 1 to {HISTORY_MAX}")
                    })?;
            }
            other => {
                return Err(format!(
                    "unknown query parameter `{other}`; expected `limit`"
                ))
            }
        }
    }
    Ok(limit)
}

/// The last `max` bytes of the file, from the first whole line.
fn read_tail(path: &std::path::Path, max: u64) -> std::io::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let start = len.saturating_sub(max);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if start == 0 {
        return Ok(text);
    }
    Ok(text
        .split_once('\n')
        .map(|(_, rest)| rest.to_owned())
        .unwrap_or_default())
}

// ---------------------------------------------------------------------------
// POST /commands/…

/// The commands the API takes, one route each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CommandKind {
    Drain,
    Undrain,
    Switchover,
    ForcePromote,
    Pause,
    Resume,
    Abort,
}

impl CommandKind {
    const ALL: [CommandKind; 7] = [
        CommandKind::Drain,
        CommandKind::Undrain,
        CommandKind::Switchover,
        CommandKind::ForcePromote,
        CommandKind::Pause,
        CommandKind::Resume,
        CommandKind::Abort,
    ];

    fn path(self) -> &'static str {
        match self {
            CommandKind::Drain => "/drain",
            CommandKind::Undrain => "/undrain",
            CommandKind::Switchover => "/switchover",
            CommandKind::ForcePromote => "/force-promote",
            CommandKind::Pause => "/pause",
            CommandKind::Resume => "/resume",
            CommandKind::Abort => "/abort",
        }
    }

    /// The field naming the command's target, if it has one.
    fn target_field(self) -> Option<&'static str> {
        match self {
            CommandKind::Drain | CommandKind::Undrain => Some("region"),
            CommandKind::Switchover => Some("to"),
            CommandKind::ForcePromote => Some("node"),
            CommandKind::Pause | CommandKind::Resume | CommandKind::Abort => None,
        }
    }
}

/// A command as parsed from its body: the command, its text for the audit
/// log, and the operator's reason.
struct Parsed {
    command: Command,
    text: String,
    reason: Option<String>,
}

/// Reads a command's body; the error names the field and the rule.
fn parse_command(state: &AdminState, kind: CommandKind, body: &[u8]) -> Result<Parsed, String> {
    let empty = body.iter().all(u8::is_ascii_whitespace);
    let fields: Map<String, Value> = if empty {
        Map::new()
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => map,
            Ok(other) => {
                return Err(format!(
                    "the body must be a JSON object, not {}",
                    json_type(&other)
                ))
            }
            Err(e) => return Err(format!("the body is not JSON: {e}")),
        }
    };
    let target = kind.target_field();
    for key in fields.keys() {
        if Some(key.as_str()) != target && key != "reason" {
            let expected = match target {
                Some(field) => format!("`{field}` and `reason`"),
                None => "only `reason`".to_owned(),
            };
            return Err(format!(
                "unknown field `{key}`: {} takes {expected}",
                kind.path().trim_start_matches('/')
            ));
        }
    }
    let string = |field: &str| -> Result<Option<String>, String> {
        match fields.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(format!(
                "field `{field}` must be a string, not {}",
                json_type(other)
            )),
        }
    };
    let reason = string("reason")?;
    if reason.as_ref().is_some_and(|r| r.len() > 1024) {
        return Err("field `reason` is longer than 1024 bytes".into());
    }
    let target_name = match target {
        Some(field) => Some(string(field)?.ok_or_else(|| {
            format!(
                "field `{field}` is missing: {} needs it",
                kind.path().trim_start_matches('/')
            )
        })?),
        None => None,
    };
    let topology = &state.topology;
    let region = |field: &str, name: &str| {
        topology.region_id(name).ok_or_else(|| {
            let known: Vec<&str> = topology.regions().iter().map(|r| r.name.as_str()).collect();
            format!(
                "field `{field}`: no region named `{name}` (regions: {})",
                known.join(", ")
            )
        })
    };
    let node = |field: &str, name: &str| {
        topology.node_id(name).ok_or_else(|| {
            let known: Vec<&str> = topology.nodes().iter().map(|n| n.name.as_str()).collect();
            format!(
                "field `{field}`: no database node named `{name}` (nodes: {})",
                known.join(", ")
            )
        })
    };
    let name = target_name.as_deref().unwrap_or_default();
    let command = match kind {
        CommandKind::Drain => Command::Drain(region("region", name)?),
        CommandKind::Undrain => Command::Undrain(region("region", name)?),
        CommandKind::Switchover => Command::Switchover {
            to: node("to", name)?,
        },
        CommandKind::ForcePromote => Command::ForcePromote {
            node: node("node", name)?,
        },
        CommandKind::Pause => Command::Pause,
        CommandKind::Resume => Command::Resume,
        CommandKind::Abort => Command::Abort,
    };
    let verb = kind.path().trim_start_matches('/');
    let text = match target_name {
        Some(name) => format!("{verb} {name}"),
        None => verb.to_owned(),
    };
    Ok(Parsed {
        command,
        text,
        reason,
    })
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

async fn command(
    state: &AdminState,
    kind: CommandKind,
    caller: &Caller,
    peer: Option<Peer>,
    body: &[u8],
) -> Response {
    let peer = peer.map(|p| p.0.to_string());
    let parsed = match parse_command(state, kind, body) {
        Ok(parsed) => parsed,
        Err(message) => {
            tracing::warn!(caller = %caller.0, error = %message, "admin API: command refused");
            return error(StatusCode::BAD_REQUEST, message);
        }
    };
    let outcome = state.handle.command(parsed.command).await;
    let (status, answer, outcome_text) = match &outcome {
        Ok(()) => (
            StatusCode::ACCEPTED,
            json!({"accepted": parsed.text, "caller": &*caller.0}),
            "accepted".to_owned(),
        ),
        Err(RuntimeError::NotLeader) => {
            let leader = state.handle.leader();
            let message = match &leader {
                Some(l) => match &l.admin {
                    Some(admin) => format!(
                        "this controller does not lead; controller {} leads: send commands to its admin API at {admin}",
                        l.controller
                    ),
                    None => format!(
                        "this controller does not lead; controller {} leads (it advertised no admin API address): send commands to its admin API",
                        l.controller
                    ),
                },
                None => "this controller does not lead, and no controller leads right now; retry shortly (the leader's /status shows \"leading\": true)".to_owned(),
            };
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({
                    "error": message,
                    "leader": false,
                    "current_leader": leader.map(|l| json!({"controller": l.controller, "admin": l.admin})),
                }),
                format!("refused: {message}"),
            )
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": e.to_string()}),
            format!("refused: {e}"),
        ),
    };
    tracing::info!(caller = %caller.0, peer = ?peer, command = %parsed.text, reason = ?parsed.reason, outcome = %outcome_text, "admin API command");
    state.audit.record(
        "admin_command",
        json!({
            "caller": &*caller.0,
            "peer": peer,
            "command": parsed.text,
            "reason": parsed.reason,
            "outcome": outcome_text,
        }),
    );
    metrics::counter!("failover_admin_commands_total", "command" => kind.path().trim_start_matches('/'), "outcome" => if outcome.is_ok() { "accepted" } else { "refused" })
        .increment(1);
    if outcome.is_err() {
        metrics::counter!("failover_admin_refusals_total", "status" => status.as_u16().to_string())
            .increment(1);
    }
    (status, json_body(&answer)).into_response()
}
