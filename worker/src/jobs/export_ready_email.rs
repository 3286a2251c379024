//! Sends the "your data export is ready" email (HTML and text) to the export's owner,
//! through the same email ledger and SMTP path as the booking emails.
//!
//! Idempotent through the ledger ([`crate::email_ledger`], the booking emails' claim path),
//! keyed by (privacy request, kind, recipient): the row is claimed before the SMTP exchange
//! and marked sent (with the job done) after it, so a retry or a duplicate delivery sends
//! nothing more; a claim held by a dead worker, or past `EMAIL_CLAIM_TIMEOUT_SECS`, is taken
//! over and sent again with the same Message-ID. An
//! erased owner is skipped ("recipient erased"). Refusals release the claim and retry with
//! backoff (transient) or go to the dead letters (permanent), as for booking emails.
use shared::{
    email::{self, ExportReadyView, render_export_ready},
    jobs::ExportReadyEmail,
};

use super::{Handler, JobRun};
use crate::{
    Deps,
    email_ledger::{self, Claim, Key, Subject, release},
    error::WorkerError,
    records::Outcome,
};

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
        let key = Key {
            subject: Subject::PrivacyRequest(args.request_id),
            kind: KIND,
            recipient_id: r.user_id,
        };
        let (ledger_id, message_id) = match email_ledger::claim(deps, &key, &message_id).await? {
            Claim::Ours { id, message_id } => (id, message_id),
            Claim::AlreadySent => return Ok(Outcome::Done),
            Claim::InFlight { claimed_at } => {
                return Ok(Outcome::Defer {
                    until: email_ledger::look_again_at(deps, claimed_at, now),
                    reason: "another delivery is sending this email".into(),
                });
            }
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
                &message_id,
                &rendered,
            )
            .map_err(|e| e.to_string())
        });
        let message = match message {
            Ok(message) => message,
            Err(reason) => {
                release(deps, ledger_id).await?;
                return Ok(Outcome::Dead(reason));
            }
        };
        match deps.mailer.send(&message).await {
            Ok(()) => {
                email_ledger::mark_sent(deps, ledger_id, run.id).await?;
                metrics::counter!("emails_sent_total", "kind" => KIND).increment(1);
                Ok(Outcome::Recorded)
            }
            Err(e) => {
                if !e.may_have_been_accepted() {
                    release(deps, ledger_id).await?;
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
