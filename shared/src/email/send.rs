//! Sending rendered emails: over SMTP with lettre when `SMTP_URL` is set, otherwise as one
//! `.eml` file per message under `MAIL_DIR` so local development needs no mail server.
use std::time::Duration;

use std::sync::Arc;

use lettre::{
    AsyncFileTransport, AsyncTransport, Message, Tokio1Executor,
    transport::smtp::authentication::Credentials,
};

use super::smtp::{SmtpPool, SmtpTarget};

/// Why a message was not delivered; the worker retries all but permanent failures.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Refused for now (4xx), or never handed over: send again later.
    #[error("transient send failure: {0}")]
    Transient(String),
    /// Refused for good (5xx, an address the server cannot take): never send again.
    #[error("permanent send failure: {0}")]
    Permanent(String),
    /// Handed over, but the verdict never came (the session was lost or timed out after the
    /// message): the server may have it. A resend could deliver it twice.
    #[error("send outcome unknown: {0}")]
    Unknown(String),
}

impl SendError {
    pub fn is_permanent(&self) -> bool {
        matches!(self, SendError::Permanent(_))
    }

    /// Whether the server may have accepted the message despite the error.
    pub fn may_have_been_accepted(&self) -> bool {
        matches!(self, SendError::Unknown(_))
    }
}

/// Where emails go.
#[derive(Clone)]
pub enum Mailer {
    Smtp(Arc<SmtpPool>),
    Files(AsyncFileTransport<Tokio1Executor>),
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mailer::Smtp(_) => f.write_str("Mailer::Smtp"),
            Mailer::Files(_) => f.write_str("Mailer::Files"),
        }
    }
}

impl Mailer {
    /// Builds the mailer from configuration: SMTP when `smtp_url` is set, files otherwise.
    /// `concurrency` is how many sends can be in flight at once (the worker's concurrency).
    pub fn from_config(
        smtp_url: Option<&str>,
        mail_dir: &str,
        concurrency: usize,
    ) -> Result<Self, String> {
        match smtp_url {
            Some(url) => Self::smtp(url, concurrency),
            None => {
                std::fs::create_dir_all(mail_dir)
                    .map_err(|e| format!("MAIL_DIR={mail_dir}: {e}"))?;
                Ok(Mailer::Files(AsyncFileTransport::new(mail_dir)))
            }
        }
    }

    /// `smtp://[user:password@]host[:port]`: plain SMTP (a local relay or a test sink).
    fn smtp(url: &str, concurrency: usize) -> Result<Self, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("SMTP_URL: {e}"))?;
        if parsed.scheme() != "smtp" {
            return Err(
                "SMTP_URL: only smtp:// is supported; terminate TLS in a local relay".into(),
            );
        }
        let host = parsed.host_str().ok_or("SMTP_URL: missing host")?;
        let credentials = (!parsed.username().is_empty()).then(|| {
            Credentials::new(
                parsed.username().to_string(),
                parsed.password().unwrap_or_default().to_string(),
            )
        });
        let target = SmtpTarget::new(host.to_string(), parsed.port().unwrap_or(25), credentials);
        // as many idle sessions as concurrent senders: a busy moment never closes any
        Ok(Mailer::Smtp(Arc::new(SmtpPool::new(target, concurrency))))
    }

    /// The longest one send can take; `None` when it is a file write.
    pub fn longest_send(&self) -> Option<Duration> {
        match self {
            Mailer::Smtp(pool) => Some(pool.target().longest_send()),
            Mailer::Files(_) => None,
        }
    }

    /// Sends one composed message ([`super::message::compose`]).
    pub async fn send(&self, message: &Message) -> Result<(), SendError> {
        match self {
            Mailer::Smtp(pool) => pool.send(message.envelope(), &message.formatted()).await,
            Mailer::Files(transport) => transport
                .send_raw(message.envelope(), &message.formatted())
                .await
                .map(drop)
                .map_err(|e| SendError::Transient(e.to_string())),
        }
    }
}
