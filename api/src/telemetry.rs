//! What the api's `/metrics` serves: every metric it publishes, described once here, the
//! request metrics recorded by the middleware ([`record_request`]), and the business counters
//! created at zero at start-up (a counter born at its first increment hides that increment
//! from `rate()`).
//!
//! Labels are bounded: `route` is the route template (`/api/v1/bookings/{id}`, or
//! `unmatched` for a path no route matches), `method` one of the standard methods or
//! `other`, `status` the numeric status.
use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request, State},
    http::Method,
    middleware::Next,
    response::Response,
};
use metrics::Unit;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::state::AppState;

/// Installs the recorder, describes the api's metrics and creates its zero series.
pub fn init() -> PrometheusHandle {
    let handle = shared::telemetry::init_metrics();
    shared::telemetry::build_info("api");
    describe();
    for name in [
        "bookings_created_total",
        "bookings_cancelled_total",
        "bookings_rescheduled_total",
    ] {
        metrics::counter!(name).absolute(0);
    }
    // the server's own failures, which the dashboards and alert runbooks read; the client
    // errors' codes appear with their first answer
    for code in ["internal", "unavailable"] {
        metrics::counter!("api_errors_total", "code" => code).absolute(0);
    }
    handle
}

fn describe() {
    metrics::describe_counter!(
        "http_requests_total",
        Unit::Count,
        "HTTP requests answered, by route template, method and status"
    );
    metrics::describe_histogram!(
        "http_request_duration_seconds",
        Unit::Seconds,
        "Time from receiving a request to its response, by route template, method and status"
    );
    metrics::describe_counter!(
        "api_errors_total",
        Unit::Count,
        "Error answers by their stable code (the `code` of the JSON body)"
    );
    metrics::describe_histogram!(
        "search_event_batch_size",
        Unit::Count,
        "Search events written per transaction of the batch writers"
    );
    metrics::describe_histogram!(
        "search_event_batch_seconds",
        Unit::Seconds,
        "Time a batch of search events took to write and commit, until its requests were answered"
    );
    metrics::describe_counter!("bookings_created_total", Unit::Count, "Bookings made");
    metrics::describe_counter!(
        "bookings_cancelled_total",
        Unit::Count,
        "Bookings cancelled"
    );
    metrics::describe_counter!(
        "bookings_rescheduled_total",
        Unit::Count,
        "Bookings moved to another time"
    );
}

/// Counts every request and times it, by route template and status. A scrape also samples
/// the database pool first, so the pool gauges are current whenever they are read.
pub async fn record_request(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    if route == "/metrics" {
        shared::telemetry::record_pool("main", &state.db);
    }
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let labels = [
        ("route", route),
        ("method", method.to_string()),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The method as a label: a client can send any token as a method, so only the standard
/// ones are kept apart.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(method_label(&Method::POST), "POST");
        let odd = Method::from_bytes(b"BREW").expect("a valid token");
        assert_eq!(method_label(&odd), "other");
    }
}
