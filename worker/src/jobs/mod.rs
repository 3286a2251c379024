//! Job execution: one handler module per job kind, and the envelope they all share: decode,
//! begin an attempt on the durable record, run, record the outcome.
//!
//! Every outcome is recorded in Postgres and the Redis task is acknowledged, so Redis never
//! retries by itself; retries, the attempt cap and the dead letters are ours (`records`).
pub mod booking_email;
pub mod scheduled_run;
pub mod search_rollup;

use std::{future::Future, panic::AssertUnwindSafe};

use apalis::prelude::BoxDynError;
use futures::FutureExt;
use shared::jobs::JobArgs;
use tracing::Instrument;

use crate::{
    Deps,
    records::{self, Outcome},
};

/// Runs one delivery of a job of kind `A` through `handler`.
pub async fn execute<A, F, Fut>(
    deps: &Deps,
    raw: serde_json::Value,
    handler: F,
) -> Result<(), BoxDynError>
where
    A: JobArgs,
    F: FnOnce(Deps, i64, A) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Outcome, crate::error::WorkerError>> + Send + 'static,
{
    let Some(job_id) = raw.get("job_id").and_then(serde_json::Value::as_i64) else {
        // nothing durable to record against: acknowledge it so it does not loop in Redis
        tracing::error!(
            queue = A::QUEUE,
            "undecodable envelope dropped to the redis dead set"
        );
        metrics::counter!("jobs_poison_total", "queue" => A::QUEUE).increment(1);
        return Err(apalis::prelude::AbortError::new("envelope without job_id").into());
    };
    let span = tracing::info_span!(
        "job",
        queue = A::QUEUE,
        job_id,
        attempt = tracing::field::Empty,
        booking_id = tracing::field::Empty,
        schedule = tracing::field::Empty
    );
    let deps = deps.clone();
    let attempt = async move {
        let Some(attempt) = records::begin(&deps.pool, job_id).await? else {
            tracing::info!("duplicate delivery of a finished job: nothing to do");
            metrics::counter!("jobs_duplicate_deliveries_total", "queue" => A::QUEUE).increment(1);
            return Ok::<(), BoxDynError>(());
        };
        tracing::Span::current().record("attempt", attempt.number);
        let started = std::time::Instant::now();
        let outcome = if attempt.number > attempt.max {
            Outcome::Dead(format!(
                "attempts exhausted ({} of {})",
                attempt.number - 1,
                attempt.max
            ))
        } else {
            match raw.get("args").cloned().map(serde_json::from_value::<A>) {
                Some(Ok(args)) => match AssertUnwindSafe(handler(deps.clone(), job_id, args))
                    .catch_unwind()
                    .await
                {
                    Ok(Ok(outcome)) => outcome,
                    Ok(Err(e)) => Outcome::Retry(e.to_string()),
                    Err(_) => Outcome::Dead("handler panicked".into()),
                },
                Some(Err(e)) => Outcome::Dead(format!("undecodable arguments: {e}")),
                None => Outcome::Dead("envelope without arguments".into()),
            }
        };
        records::finish(&deps.pool, job_id, attempt, &outcome, deps.clock.now()).await?;
        let labels = [
            ("queue", A::QUEUE.to_string()),
            ("outcome", outcome.label().to_string()),
        ];
        metrics::counter!("jobs_total", &labels).increment(1);
        metrics::histogram!("job_duration_seconds", &labels)
            .record(started.elapsed().as_secs_f64());
        match &outcome {
            Outcome::Done | Outcome::Recorded => tracing::info!("job done"),
            Outcome::Skipped(reason) => tracing::info!(reason = %reason, "job skipped"),
            Outcome::Retry(error) => tracing::warn!(error = %error, "job failed; retry scheduled"),
            Outcome::Defer { until, reason } => {
                tracing::info!(until = %until, reason = %reason, "job deferred")
            }
            Outcome::Dead(error) => tracing::error!(error = %error, "job dead"),
        }
        Ok(())
    }
    .instrument(span);
    // An attempt runs to its recorded outcome even if apalis drops this future (a worker
    // restarted after a Redis error, a timeout): cancelled between the SMTP server's
    // acceptance and the ledger write, it would leave an email to be sent twice.
    match tokio::spawn(attempt).await {
        Ok(result) => result,
        Err(e) => Err(format!("job task failed: {e}").into()),
    }
}
