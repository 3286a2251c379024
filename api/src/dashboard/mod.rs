//! The ops dashboard at `/ops`: server-side pages (minijinja, escaping every value by
//! default, so a job error holding `<script>` shows as text) over what `crate::ops` reads
//! and does, for people on call. One small script of our own refreshes the overview every
//! five seconds; nothing is loaded from another host and there is no build step.
//!
//! Every action is a POST carrying the session's CSRF token; a viewer's (or a forged) POST
//! is refused with 403. Without a session a page redirects to `/ops/login?next=<the page>`.
//! Refusals are pages that say why: a retry of a done job is a 409 naming its state, a bulk
//! action without a filter asks for an explicit "all" with the count.
//!
//! These are browser pages, not API operations: they are not in the OpenAPI document (the
//! JSON twin under `/api/v1/admin/` is).
pub mod session;

use std::{collections::BTreeMap, sync::OnceLock};

use axum::{
    Form, Router,
    extract::{Path, Query, State},
    http::{HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use chrono::{DateTime, NaiveDateTime, Utc};
use minijinja::{Environment, Value, context};
use serde::Serialize;
use shared::records::{self, BulkAction, JobFilter, JobState};

use self::session::Session;
use crate::{error::ApiError, ops, state::AppState};

/// The page templates, compiled into the binary (no file to find at run time). Built once:
/// an immutable table of parsed templates, like a constant.
fn templates() -> &'static Environment<'static> {
    static TEMPLATES: OnceLock<Environment<'static>> = OnceLock::new();
    TEMPLATES.get_or_init(|| {
        let mut env = Environment::new();
        // `.html` names: minijinja escapes every value for HTML
        for (name, source) in [
            ("base.html", include_str!("../../templates/ops/base.html")),
            ("login.html", include_str!("../../templates/ops/login.html")),
            ("error.html", include_str!("../../templates/ops/error.html")),
            (
                "overview.html",
                include_str!("../../templates/ops/overview.html"),
            ),
            (
                "overview_live.html",
                include_str!("../../templates/ops/overview_live.html"),
            ),
            ("jobs.html", include_str!("../../templates/ops/jobs.html")),
            (
                "bulk_confirm.html",
                include_str!("../../templates/ops/bulk_confirm.html"),
            ),
            (
                "bulk_done.html",
                include_str!("../../templates/ops/bulk_done.html"),
            ),
            ("job.html", include_str!("../../templates/ops/job.html")),
            (
                "schedules.html",
                include_str!("../../templates/ops/schedules.html"),
            ),
            ("audit.html", include_str!("../../templates/ops/audit.html")),
        ] {
            // start-up: the templates are part of the source, a syntax error is a bug the
            // dashboard tests catch
            env.add_template(name, source)
                .expect("the dashboard templates parse");
        }
        env
    })
}

/// Renders `name` with `ctx` as a page with `status`; security headers on every page.
fn page(status: StatusCode, name: &str, ctx: Value) -> Response {
    let body = templates().get_template(name).and_then(|t| t.render(ctx));
    let (status, body) = match body {
        Ok(body) => (status, body),
        Err(e) => {
            tracing::error!(error = %e, template = name, "rendering a dashboard page");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "<!doctype html><title>500</title><p>internal error</p>".to_string(),
            )
        }
    };
    let mut response = (status, Html(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// Why a dashboard request got no page: no session (back to the login, with where it came
/// from), or a refusal or failure shown as a page with its status.
#[derive(Debug)]
pub enum Refusal {
    SignIn { next: String },
    Api(ApiError),
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Refusal::Api(e)
    }
}

impl From<sqlx::Error> for Refusal {
    fn from(e: sqlx::Error) -> Self {
        Refusal::Api(e.into())
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::SignIn { next } => {
                Redirect::to(&format!("/ops/login?next={}", encode(&next))).into_response()
            }
            Refusal::Api(e) => {
                let status = e.status();
                let detail = e.public_detail();
                let code = e.code().to_string();
                metrics::counter!("api_errors_total", "code" => code.clone()).increment(1);
                page(
                    status,
                    "error.html",
                    context! {
                        status => status.as_u16(),
                        reason => status.canonical_reason().unwrap_or(""),
                        code,
                        detail,
                        back => "/ops",
                    },
                )
            }
        }
    }
}

type PageResult = Result<Response, Refusal>;

/// Percent-encodes `s` for a query string value.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The dashboard's routes, under `/ops`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ops", get(overview))
        .route("/ops/live", get(overview_live))
        .route("/ops/login", get(login_form).post(login))
        .route("/ops/logout", post(logout))
        .route("/ops/jobs", get(jobs))
        .route("/ops/jobs/bulk", post(bulk))
        .route("/ops/jobs/{id}", get(job))
        .route("/ops/jobs/{id}/retry", post(retry))
        .route("/ops/jobs/{id}/discard", post(discard))
        .route("/ops/queues/{queue}/pause", post(pause_queue))
        .route("/ops/queues/{queue}/resume", post(resume_queue))
        .route("/ops/schedules", get(schedules))
        .route("/ops/schedules/{name}/trigger", post(trigger_schedule))
        .route("/ops/schedules/{name}/pause", post(pause_schedule))
        .route("/ops/schedules/{name}/resume", post(resume_schedule))
        .route("/ops/audit", get(audit))
        .route("/ops/static/ops.css", get(css))
        .route("/ops/static/ops.js", get(js))
}

async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("../../static/ops/ops.css"),
    )
}

async fn js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("../../static/ops/ops.js"),
    )
}

/// What every signed-in page's layout needs.
fn frame(session: &Session, nav: &str, notice: Option<&str>) -> Value {
    context! {
        user => context! { id => session.user_id, role => session.role.as_str() },
        csrf => session.csrf.clone(),
        can_act => session.can_act(),
        nav,
        notice => notice.and_then(notice_text),
    }
}

/// The message of a `?notice=` code (fixed texts: a link cannot make the page say anything).
fn notice_text(code: &str) -> Option<&'static str> {
    Some(match code {
        "retried" => "Sent back to the outbox with fresh attempts.",
        "discarded" => "Discarded: kept as skipped.",
        "queue_paused" => "Queue paused: nothing is relayed or fetched until it is resumed.",
        "queue_resumed" => "Queue resumed.",
        "unchanged" => "Nothing to change: it already was.",
        "triggered" => "Requested: the leading scheduler enqueues the run within a tick.",
        "schedule_paused" => "Schedule paused: no slot fires until it is resumed.",
        "schedule_resumed" => "Schedule resumed.",
        _ => return None,
    })
}

#[derive(serde::Deserialize)]
struct NoticeQuery {
    notice: Option<String>,
}

/// A POST form that carries only the CSRF token.
#[derive(serde::Deserialize)]
struct ActionForm {
    csrf: Option<String>,
}

// ---- sign-in --------------------------------------------------------------------------------

#[derive(serde::Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

async fn login_form(Query(query): Query<LoginQuery>) -> Response {
    page(
        StatusCode::OK,
        "login.html",
        context! { next => session::safe_next(query.next.as_deref()) },
    )
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
    next: Option<String>,
}

/// Trades a token for a session. A bad token shows the form again (401); a valid token of
/// a student or instructor is refused (403).
async fn login(State(state): State<AppState>, Form(form): Form<LoginForm>) -> PageResult {
    let next = session::safe_next(form.next.as_deref());
    let again = |status: StatusCode, error: &str| {
        page(
            status,
            "login.html",
            context! { next => next.clone(), error },
        )
    };
    let Ok((user, token_expires)) = state.keys.verify_expiring(form.token.trim()) else {
        return Ok(again(
            StatusCode::UNAUTHORIZED,
            "That token is not valid (or has expired). Mint a new one.",
        ));
    };
    // the role as it is now, not as the token was minted
    let role: Option<shared::domain::Role> = sqlx::query_scalar!(
        r#"select role as "role: shared::domain::Role" from users where id = $1 and erased_at is null"#,
        user.id
    )
    .fetch_optional(&state.db)
    .await?;
    let Some(role) = role else {
        return Ok(again(StatusCode::UNAUTHORIZED, "That account is closed."));
    };
    if !role.can_view_ops() {
        return Ok(again(
            StatusCode::FORBIDDEN,
            "The dashboard requires the ops_viewer, ops_operator or admin role.",
        ));
    }
    let now = state.clock.now();
    let expires =
        token_expires.min(now + chrono::Duration::minutes(state.config.ops_session_minutes));
    let token = session::open(&state, user.id, expires).await?;
    tracing::info!(user_id = user.id, "ops dashboard sign-in");
    let mut response = Redirect::to(&next).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session::set_cookie(
            &token,
            (expires - now).num_seconds().max(0),
            state.config.ops_cookie_secure,
        ),
    );
    Ok(response)
}

async fn logout(
    State(state): State<AppState>,
    session: Session,
    Form(form): Form<ActionForm>,
) -> PageResult {
    session.check_csrf(form.csrf.as_deref())?;
    session::close(&state, &session).await?;
    let mut response = Redirect::to("/ops/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session::clear_cookie(state.config.ops_cookie_secure),
    );
    Ok(response)
}

// ---- the overview ---------------------------------------------------------------------------

/// One bar pair of the throughput chart, in SVG units.
#[derive(Serialize)]
struct Bar {
    x: u32,
    y_done: f64,
    h_done: f64,
    y_dead: f64,
    h_dead: f64,
    done: i64,
    dead: i64,
    label: String,
}

fn overview_context(session: &Session, o: &ops::Overview) -> Value {
    const HEIGHT: f64 = 120.0;
    let peak = o
        .throughput
        .iter()
        .map(|m| m.succeeded + m.dead)
        .max()
        .unwrap_or(0)
        .max(1);
    let bars: Vec<Bar> = o
        .throughput
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let h_done = HEIGHT * m.succeeded as f64 / peak as f64;
            let h_dead = HEIGHT * m.dead as f64 / peak as f64;
            Bar {
                x: i as u32 * 10,
                y_done: HEIGHT - h_done,
                h_done,
                y_dead: HEIGHT - h_done - h_dead,
                h_dead,
                done: m.succeeded,
                dead: m.dead,
                label: m.minute.format("%H:%M UTC").to_string(),
            }
        })
        .collect();
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / 1_048_576.0);
    let redis = o.redis.clone().unwrap_or_default();
    context! {
        o => Value::from_serialize(o),
        chart => context! {
            height => HEIGHT,
            bars => Value::from_serialize(&bars),
            peak,
            total_done => o.throughput.iter().map(|m| m.succeeded).sum::<i64>(),
            total_dead => o.throughput.iter().map(|m| m.dead).sum::<i64>(),
        },
        redis_memory => mib(redis.used_memory_bytes),
        redis_max => mib(redis.maxmemory_bytes),
        redis_percent => if redis.maxmemory_bytes > 0 {
            format!("{:.0}", 100.0 * redis.used_memory_bytes as f64 / redis.maxmemory_bytes as f64)
        } else {
            String::new()
        },
        can_act => session.can_act(),
        csrf => session.csrf.clone(),
    }
}

async fn overview(
    State(state): State<AppState>,
    session: Session,
    Query(q): Query<NoticeQuery>,
) -> PageResult {
    let o = ops::overview(&state).await?;
    Ok(page(
        StatusCode::OK,
        "overview.html",
        context! { ..frame(&session, "overview", q.notice.as_deref()), ..overview_context(&session, &o) },
    ))
}

/// The overview's live part alone, fetched by `ops.js` every five seconds.
async fn overview_live(State(state): State<AppState>, session: Session) -> PageResult {
    let o = ops::overview(&state).await?;
    Ok(page(
        StatusCode::OK,
        "overview_live.html",
        overview_context(&session, &o),
    ))
}

// ---- jobs -----------------------------------------------------------------------------------

/// The job filter as the dashboard's forms send it: every field a string, empty for none.
fn parse_filter(query: &BTreeMap<String, String>) -> Result<JobFilter, ApiError> {
    let text = |k: &str| {
        query
            .get(k)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let id = |k: &str| -> Result<Option<i64>, ApiError> {
        text(k)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| ApiError::invalid("invalid_filter", k, format!("{k} is a number")))
            })
            .transpose()
    };
    let instant = |k: &str| -> Result<Option<DateTime<Utc>>, ApiError> {
        text(k)
            .map(|v| {
                DateTime::parse_from_rfc3339(&v)
                    .map(|t| t.with_timezone(&Utc))
                    .or_else(|_| {
                        // a datetime-local input: read as UTC
                        NaiveDateTime::parse_from_str(&v, "%Y-%m-%dT%H:%M")
                            .or_else(|_| NaiveDateTime::parse_from_str(&v, "%Y-%m-%dT%H:%M:%S"))
                            .map(|t| t.and_utc())
                    })
                    .map_err(|_| {
                        ApiError::invalid(
                            "invalid_filter",
                            k,
                            format!("{k} is a date and time (UTC)"),
                        )
                    })
            })
            .transpose()
    };
    Ok(JobFilter {
        state: text("state")
            .map(|s| ops::parse_state(&s, "state"))
            .transpose()?,
        queue: text("queue"),
        kind: text("kind"),
        error: text("error"),
        booking_id: id("booking_id")?,
        user_id: id("user_id")?,
        from: instant("from")?,
        to: instant("to")?,
    })
}

/// The filter fields of a query, without the paging, action and form fields.
fn filter_fields(query: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    const FIELDS: [&str; 8] = [
        "state",
        "queue",
        "kind",
        "error",
        "booking_id",
        "user_id",
        "from",
        "to",
    ];
    query
        .iter()
        .filter(|(k, v)| FIELDS.contains(&k.as_str()) && !v.trim().is_empty())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Jobs per page.
const PAGE: i64 = 50;

async fn jobs(
    State(state): State<AppState>,
    session: Session,
    Query(query): Query<BTreeMap<String, String>>,
) -> PageResult {
    let filter = parse_filter(&query)?;
    let before = query
        .get("before")
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| ApiError::invalid("invalid_filter", "before", "before is a job id"))
        })
        .transpose()?;
    let jobs = records::list_filtered(&state.db, &filter, before, PAGE).await?;
    let next_before = (jobs.len() as i64 == PAGE)
        .then(|| jobs.last().map(|j| j.id))
        .flatten();
    let fields = filter_fields(&query);
    let mut next_query = fields.clone();
    if let Some(id) = next_before {
        next_query.insert("before".into(), id.to_string());
    }
    Ok(page(
        StatusCode::OK,
        "jobs.html",
        context! {
            ..frame(&session, "jobs", query.get("notice").map(String::as_str)),
            ..context! {
                jobs => Value::from_serialize(&jobs),
                f => Value::from_serialize(&fields),
                states => JobState::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                query => Value::from_serialize(&fields),
                next_before,
                next_query => Value::from_serialize(&next_query),
            }
        },
    ))
}

/// A bulk action: without `confirm=yes` it shows what it would do (the count; and, with no
/// filter but the state, asks for "all"); with it, it acts.
async fn bulk(
    State(state): State<AppState>,
    session: Session,
    Form(form): Form<BTreeMap<String, String>>,
) -> PageResult {
    let actor = session.authorize_action(form.get("csrf").map(String::as_str))?;
    let action = match form.get("action").map(String::as_str) {
        Some("retry") => BulkAction::Retry,
        Some("discard") => BulkAction::Discard,
        _ => {
            return Err(ApiError::invalid("invalid_action", "action", "retry or discard").into());
        }
    };
    let filter = parse_filter(&form)?;
    let fields = filter_fields(&form);
    let all = form.get("all").is_some_and(|v| v == "yes");
    let confirmed = form.get("confirm").is_some_and(|v| v == "yes");
    if !confirmed || (!filter.narrows() && !all) {
        // the count, and the refusal if the state does not fit the action
        let count = match ops::check_bulk(&state, action, &filter, true).await {
            Ok(count) => count,
            Err(e) => return Err(e.into()),
        };
        let shown: Vec<(String, String)> = fields
            .iter()
            .filter(|(k, _)| k.as_str() != "state")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // asked to act without "all": say so, with the count (422, like the JSON twin)
        let status = if confirmed {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::OK
        };
        return Ok(page(
            status,
            "bulk_confirm.html",
            context! {
                ..frame(&session, "jobs", None),
                ..context! {
                    action => action.as_str(),
                    count,
                    narrows => filter.narrows(),
                    state => filter.state.map(|s| s.as_str()),
                    shown,
                    query => Value::from_serialize(&fields),
                }
            },
        ));
    }
    let outcome = ops::bulk(&state, actor, action, &filter, all).await?;
    Ok(page(
        StatusCode::OK,
        "bulk_done.html",
        context! {
            ..frame(&session, "jobs", None),
            ..context! {
                outcome => Value::from_serialize(&outcome),
                query => Value::from_serialize(&fields),
            }
        },
    ))
}

async fn job(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Query<NoticeQuery>,
) -> PageResult {
    let id = parse_id(&id)?;
    let detail = ops::job(&state, id).await?;
    let payload = serde_json::to_string_pretty(&detail.job.payload).unwrap_or_default();
    Ok(page(
        StatusCode::OK,
        "job.html",
        context! {
            ..frame(&session, "jobs", q.notice.as_deref()),
            ..context! {
                job => Value::from_serialize(&detail.job),
                payload,
                errors => Value::from_serialize(&detail.errors),
                emails => Value::from_serialize(&detail.emails),
            }
        },
    ))
}

fn parse_id(id: &str) -> Result<i64, ApiError> {
    id.parse().map_err(|_| ApiError::BadRequest {
        code: "invalid_path",
        detail: "a job id is a number".into(),
        field: None,
    })
}

async fn act_on_job(
    state: &AppState,
    session: &Session,
    form: &ActionForm,
    action: BulkAction,
    id: &str,
) -> PageResult {
    let actor = session.authorize_action(form.csrf.as_deref())?;
    let id = parse_id(id)?;
    ops::act_on_job(state, actor, action, id).await?;
    let notice = match action {
        BulkAction::Retry => "retried",
        BulkAction::Discard => "discarded",
    };
    Ok(Redirect::to(&format!("/ops/jobs/{id}?notice={notice}")).into_response())
}

async fn retry(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> PageResult {
    act_on_job(&state, &session, &form, BulkAction::Retry, &id).await
}

async fn discard(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> PageResult {
    act_on_job(&state, &session, &form, BulkAction::Discard, &id).await
}

// ---- queues and schedules -------------------------------------------------------------------

async fn set_queue(
    state: &AppState,
    session: &Session,
    form: &ActionForm,
    queue: &str,
    paused: bool,
) -> PageResult {
    let actor = session.authorize_action(form.csrf.as_deref())?;
    let changed = ops::set_queue_paused(state, actor, queue, paused).await?;
    let notice = match (changed, paused) {
        (false, _) => "unchanged",
        (true, true) => "queue_paused",
        (true, false) => "queue_resumed",
    };
    Ok(Redirect::to(&format!("/ops?notice={notice}")).into_response())
}

async fn pause_queue(
    State(state): State<AppState>,
    session: Session,
    Path(queue): Path<String>,
    Form(form): Form<ActionForm>,
) -> PageResult {
    set_queue(&state, &session, &form, &queue, true).await
}

async fn resume_queue(
    State(state): State<AppState>,
    session: Session,
    Path(queue): Path<String>,
    Form(form): Form<ActionForm>,
) -> PageResult {
    set_queue(&state, &session, &form, &queue, false).await
}

async fn schedules(
    State(state): State<AppState>,
    session: Session,
    Query(q): Query<NoticeQuery>,
) -> PageResult {
    let now = state.clock.now();
    let all = shared::schedule::status(&state.db, now).await?;
    let leader = all.iter().find_map(|s| s.leader.clone());
    let rows: Vec<Value> = all
        .iter()
        .map(|s| {
            let next: Vec<(String, String)> = s
                .next_fires
                .iter()
                .map(|n| (n.local.clone(), n.at.to_rfc3339()))
                .collect();
            context! { ..Value::from_serialize(s), ..context! { next } }
        })
        .collect();
    Ok(page(
        StatusCode::OK,
        "schedules.html",
        context! {
            ..frame(&session, "schedules", q.notice.as_deref()),
            ..context! { schedules => rows, leader }
        },
    ))
}

async fn trigger_schedule(
    State(state): State<AppState>,
    session: Session,
    Path(name): Path<String>,
    Form(form): Form<ActionForm>,
) -> PageResult {
    let actor = session.authorize_action(form.csrf.as_deref())?;
    ops::trigger_schedule(&state, actor, &name).await?;
    Ok(Redirect::to("/ops/schedules?notice=triggered").into_response())
}

async fn set_schedule(
    state: &AppState,
    session: &Session,
    form: &ActionForm,
    name: &str,
    paused: bool,
) -> PageResult {
    let actor = session.authorize_action(form.csrf.as_deref())?;
    let changed = ops::set_schedule_paused(state, actor, name, paused).await?;
    let notice = match (changed, paused) {
        (false, _) => "unchanged",
        (true, true) => "schedule_paused",
        (true, false) => "schedule_resumed",
    };
    Ok(Redirect::to(&format!("/ops/schedules?notice={notice}")).into_response())
}

async fn pause_schedule(
    State(state): State<AppState>,
    session: Session,
    Path(name): Path<String>,
    Form(form): Form<ActionForm>,
) -> PageResult {
    set_schedule(&state, &session, &form, &name, true).await
}

async fn resume_schedule(
    State(state): State<AppState>,
    session: Session,
    Path(name): Path<String>,
    Form(form): Form<ActionForm>,
) -> PageResult {
    set_schedule(&state, &session, &form, &name, false).await
}

// ---- the audit log --------------------------------------------------------------------------

#[derive(serde::Deserialize)]
struct AuditQuery {
    before: Option<i64>,
}

async fn audit(
    State(state): State<AppState>,
    session: Session,
    Query(q): Query<AuditQuery>,
) -> PageResult {
    const AUDIT_PAGE: i64 = 100;
    let entries = shared::audit::ops_entries(&state.db, q.before, AUDIT_PAGE).await?;
    let next_before = (entries.len() as i64 == AUDIT_PAGE)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    let rows: Vec<Value> = entries
        .iter()
        .map(|e| {
            // which jobs (a bulk batch lists up to 500: the first few and the count)
            let summary = match e.detail.get("job_ids").and_then(|v| v.as_array()) {
                Some(ids) if ids.len() > 10 => {
                    let first: Vec<String> = ids.iter().take(10).map(|i| i.to_string()).collect();
                    format!("jobs {} … ({} in this batch)", first.join(", "), ids.len())
                }
                Some(ids) => {
                    let all: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
                    format!("job {}", all.join(", "))
                }
                None => e
                    .detail
                    .get("queue")
                    .map(|q| format!("queue {}", q.as_str().unwrap_or_default()))
                    .or_else(|| {
                        e.detail
                            .get("schedule")
                            .map(|s| format!("schedule {}", s.as_str().unwrap_or_default()))
                    })
                    .unwrap_or_default(),
            };
            context! { ..Value::from_serialize(e), ..context! { summary } }
        })
        .collect();
    Ok(page(
        StatusCode::OK,
        "audit.html",
        context! {
            ..frame(&session, "audit", None),
            ..context! { entries => rows, next_before }
        },
    ))
}
