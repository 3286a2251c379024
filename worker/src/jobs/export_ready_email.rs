//! Sends the "your data export is ready" email (HTML and text) to the export's owner,
//! through the same email ledger and SMTP path as the booking emails.
//!
//! Idempotent through the ledger, keyed by (privacy request, kind, recipient): the row is
//! claimed before the SMTP exchange and marked sent (with the job done) after it, so a retry
//! or a duplicate delivery sends nothing more. A claim whose worker is dead, or older than
//! `EMAIL_CLAIM_TIMEOUT_SECS`, is taken over and sent again with the same Message-ID. An
//! erased owner is skipped ("recipient erased"). Refusals release the claim and retry with
//! backoff (transient) or go to the dead letters (permanent), as for booking emails.
use shared::{
    email::{self, ExportReadyView, render_export_ready},
    jobs::ExportReadyEmail,
};

use super::{Handler, JobRun};
use crate::{Deps, error::WorkerError, records::Outcome};

/// The ledger's kind of this email.
const KIND: &str = "export_ready";

pub struct ExportReadyEmailJob;

impl Handler for ExportReadyEmailJob {
    type Args = ExportReadyEmail;

    fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(600)
    }

    async fn work(
        &self,
        deps: &Deps,
        run: JobRun,
        args: ExportReadyEmail,
    ) -> Result<Outcome, WorkerError> {
        let now = deps.clock.now();
        let Some(r) = sqlx::query!(
            "select r.user_id, r.state, r.expires_at, u.email, u.full_name, u.timezone, u.erased_at
             from privacy_requests r join users u on u.id = r.user_id
             where r.id = $1 and r.kind = 'export'",
            args.request_id
        )
        .fetch_optional(&deps.pool)
        .await?
        else {
            return Ok(Outcome::Dead(format!(
                "export request {} does not exist",
                args.request_id
            )));
        };
        if r.erased_at.is_some() {
            return Ok(Outcome::Skipped("recipient erased".into()));
        }
        let Some(expires_at) = r.expires_at.filter(|_| r.state == "done") else {
            return Ok(Outcome::Skipped("export not ready".into()));
        };
        let message_id = email::export_ready_message_id(args.request_id, &deps.config.mail_from);
        let claimed = sqlx::query!(
            "insert into email_ledger (privacy_request_id, kind, recipient_id, message_id, claimed_by)
             values ($1, $2, $3, $4, $5)
             on conflict (privacy_request_id, kind, recipient_id) do update
               set claimed_at = now(), claimed_by = excluded.claimed_by
             where email_ledger.status = 'sending'
               and (email_ledger.claimed_at < now() - make_interval(secs => $6)
                    or (email_ledger.claimed_by is not null and not exists (
                          select 1 from workers w
                           where w.id = email_ledger.claimed_by and w.stopped_at is null
                             and w.heartbeat_at > now() - make_interval(secs => $7))))
             returning id, message_id",
            args.request_id,
            KIND,
            r.user_id,
            message_id,
            &*deps.instance,
            deps.config.email_claim_timeout_secs as f64,
            crate::presence::dead_after(std::time::Duration::from_secs(deps.config.heartbeat_secs))
                .as_secs_f64()
        )
        .fetch_optional(&deps.durable)
        .await?;
        let Some(claimed) = claimed else {
            let status: Option<String> = sqlx::query_scalar!(
                "select status from email_ledger where privacy_request_id = $1 and kind = $2 and recipient_id = $3",
                args.request_id,
                KIND,
                r.user_id
            )
            .fetch_optional(&deps.pool)
            .await?;
            return Ok(match status.as_deref() {
                Some("sent") => Outcome::Done,
                _ => Outcome::Defer {
                    until: now
                        + chrono::Duration::seconds(
                            deps.config.email_claim_timeout_secs as i64 + 1,
                        ),
                    reason: "another delivery is sending this email".into(),
                },
            });
        };
        let download_url = format!(
            "{}/api/v1/privacy/exports/{}/download",
            deps.config.app_url.trim_end_matches('/'),
            args.request_id
        );
        let message = render_export_ready(&ExportReadyView {
            recipient_name: &r.full_name,
            recipient_timezone: &r.timezone,
            download_url: &download_url,
            expires_at,
        })
        .map_err(|e| format!("rendering failed: {e}"))
        .and_then(|rendered| {
            email::compose(
                &deps.config.mail_from,
                &r.full_name,
                &r.email,
                &claimed.message_id,
                &rendered,
            )
            .map_err(|e| e.to_string())
        });
        let message = match message {
            Ok(message) => message,
            Err(reason) => {
                release(deps, claimed.id).await?;
                return Ok(Outcome::Dead(reason));
            }
        };
        match deps.mailer.send(&message).await {
            Ok(()) => {
                shared::records::done_with_email_sent(&deps.durable, run.id, claimed.id).await?;
                metrics::counter!("emails_sent_total", "kind" => KIND).increment(1);
                Ok(Outcome::Recorded)
            }
            Err(e) => {
                if !e.may_have_been_accepted() {
                    release(deps, claimed.id).await?;
                }
                metrics::counter!("emails_failed_total", "kind" => KIND, "permanent" => e.is_permanent().to_string())
                    .increment(1);
                Ok(if e.is_permanent() {
                    Outcome::Dead(e.to_string())
                } else {
                    Outcome::Retry(e.to_string())
                })
            }
        }
    }
}

/// Drops our claim after a failed send, so the retry can claim it again.
async fn release(deps: &Deps, ledger_id: i64) -> Result<(), WorkerError> {
    sqlx::query!(
        "delete from email_ledger where id = $1 and status = 'sending'",
        ledger_id
    )
    .execute(&deps.pool)
    .await?;
    Ok(())
}
