//! Our SMTP client: lettre's protocol (`AsyncSmtpConnection`, its commands and replies) over
//! sockets we open ourselves, kept in a small pool of idle sessions.
//!
//! Why not lettre's `AsyncSmtpTransport` and its pool (lettre 0.11.23, the newest release):
//! - its sockets keep Nagle's algorithm on. lettre writes the message body and the closing
//!   `.` in two writes, so the `.` waits for the server's delayed ACK: 40 ms on every email
//!   (measured here: 42-48 ms of a 47 ms job; upstream fixed it in lettre PR #1159, not yet
//!   released). That alone capped a worker at about 650 emails/s at concurrency 32;
//! - its pool keeps at most `max_size` idle connections and closes the rest as they come
//!   back, so a busy moment costs new TCP sessions, banners and EHLOs;
//! - its timeout bounds the connect only: a server that stops answering would hold a worker
//!   slot forever;
//! - its `send` cannot tell "refused" from "maybe accepted": a connection lost after the
//!   final `.` and a 4xx are both just errors, and resending after the first can deliver the
//!   email twice.
//!
//! So a send runs lettre's steps one by one: MAIL, RCPT, DATA under a command timeout, then
//! the message and its final reply under a longer one, and says which of three things
//! happened ([`SendError`]): refused (retry later or never), or outcome unknown (the server
//! may have the message; the caller keeps its claim and lets the claim timeout decide).
//! Error texts carry the reply code and the step, never the server's reply text, which
//! usually repeats the recipient's address.
use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use lettre::{
    address::Envelope,
    transport::smtp::{
        authentication::{Credentials, Mechanism},
        client::AsyncSmtpConnection,
        commands::{Data, Mail, Rcpt},
        extension::{ClientId, Extension, MailBodyParameter, MailParameter},
    },
};

use super::SendError;

/// Idle sessions older than this are closed rather than reused: servers time idle sessions
/// out after minutes, and one that did would fail the next send on it.
const MAX_IDLE: Duration = Duration::from_secs(60);

/// Where and how to connect, and how long each part of an exchange may take.
#[derive(Debug, Clone)]
pub struct SmtpTarget {
    pub host: String,
    pub port: u16,
    pub credentials: Option<Credentials>,
    /// TCP connect, banner, EHLO and AUTH.
    pub connect_timeout: Duration,
    /// Each of MAIL, RCPT and DATA.
    pub command_timeout: Duration,
    /// Writing the message and waiting for the server's verdict on it. Long, because giving
    /// up here leaves the outcome unknown (RFC 5321 4.5.3.2.6 suggests 10 minutes).
    pub data_timeout: Duration,
}

impl SmtpTarget {
    /// Plain SMTP to `host:port` with this platform's timeouts.
    pub fn new(host: String, port: u16, credentials: Option<Credentials>) -> Self {
        Self {
            host,
            port,
            credentials,
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(30),
            data_timeout: Duration::from_secs(120),
        }
    }

    /// The longest one send can take, a reconnect included: an email claim must not be
    /// taken over before this has passed (`EMAIL_CLAIM_TIMEOUT_SECS`).
    pub fn longest_send(&self) -> Duration {
        2 * (self.connect_timeout + self.command_timeout)
            + 2 * self.command_timeout
            + self.data_timeout
    }
}

/// A pool of SMTP sessions; at most `max_idle` are kept between sends, as many as there are
/// concurrent senders are opened.
pub struct SmtpPool {
    target: SmtpTarget,
    hello: ClientId,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
    max_idle: usize,
}

/// How an exchange ended when it did not deliver.
enum Failure {
    /// The session was dead before this message (closed, reset, or `421` at MAIL): nothing
    /// reached the server, so another session may try at once.
    Stale(SendError),
    Other(SendError),
}

impl SmtpPool {
    pub fn new(target: SmtpTarget, max_idle: usize) -> Self {
        Self {
            target,
            hello: ClientId::default(),
            idle: Mutex::new(Vec::new()),
            max_idle: max_idle.max(1),
        }
    }

    pub fn target(&self) -> &SmtpTarget {
        &self.target
    }

    /// Sends one message.
    ///
    /// A reused session that turns out dead at MAIL (the server closed it while idle) is
    /// replaced by a new one and the message sent there: the server never saw it, so this
    /// cannot deliver it twice.
    pub async fn send(&self, envelope: &Envelope, message: &[u8]) -> Result<(), SendError> {
        let (conn, reused) = match self.take_idle() {
            Some(conn) => (conn, true),
            None => (self.connect().await?, false),
        };
        match self.exchange(conn, envelope, message).await {
            Ok(()) => Ok(()),
            Err(Failure::Stale(_)) if reused => {
                let conn = self.connect().await?;
                self.exchange(conn, envelope, message)
                    .await
                    .map_err(Failure::into_error)
            }
            Err(failure) => Err(failure.into_error()),
        }
    }

    /// One MAIL-RCPT-DATA exchange on `conn`; the session goes back to the pool only after a
    /// delivery (after a failure, a fresh session beats reasoning about this one's state).
    async fn exchange(
        &self,
        mut conn: AsyncSmtpConnection,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<(), Failure> {
        let mail = Mail::new(
            envelope.from().cloned(),
            mail_parameters(&conn, envelope, message)?,
        );
        match self.step(conn.command(mail), "MAIL").await {
            Ok(()) => {}
            // a session the server gave up on: closed, reset, or 421 "closing channel"
            Err((error, None | Some(421))) => return Err(Failure::Stale(error)),
            Err((error, Some(_))) => return Err(Failure::Other(error)),
        }
        for recipient in envelope.to() {
            self.step(conn.command(Rcpt::new(recipient.clone(), vec![])), "RCPT")
                .await
                .map_err(|(error, _)| Failure::Other(error))?;
        }
        self.step(conn.command(Data), "DATA")
            .await
            .map_err(|(error, _)| Failure::Other(error))?;
        // from here on, a silence or a lost connection may hide an accepted message
        match tokio::time::timeout(self.target.data_timeout, conn.message(message)).await {
            Ok(Ok(_)) => {
                self.check_in(conn);
                Ok(())
            }
            Ok(Err(e)) if e.is_transient() || e.is_permanent() => {
                Err(Failure::Other(refusal(&e, "end of data")))
            }
            Ok(Err(e)) => Err(Failure::Other(SendError::Unknown(format!(
                "SMTP session lost after the message was sent ({})",
                kind(&e)
            )))),
            Err(_) => Err(Failure::Other(SendError::Unknown(format!(
                "no SMTP verdict on the message within {:?}",
                self.target.data_timeout
            )))),
        }
    }

    /// Runs one command under the command timeout; on failure, the error and the reply code
    /// if the server answered.
    async fn step(
        &self,
        command: impl Future<
            Output = Result<
                lettre::transport::smtp::response::Response,
                lettre::transport::smtp::Error,
            >,
        >,
        name: &str,
    ) -> Result<(), (SendError, Option<u16>)> {
        match tokio::time::timeout(self.target.command_timeout, command).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                let code = e.status().and_then(|c| c.to_string().parse().ok());
                let error = if e.is_transient() || e.is_permanent() {
                    refusal(&e, name)
                } else {
                    SendError::Transient(format!("SMTP {name} failed ({})", kind(&e)))
                };
                Err((error, code))
            }
            Err(_) => Err((
                SendError::Transient(format!(
                    "SMTP {name} timed out after {:?}",
                    self.target.command_timeout
                )),
                None,
            )),
        }
    }

    /// The most recently used idle session young enough to trust.
    fn take_idle(&self) -> Option<AsyncSmtpConnection> {
        let mut idle = self.idle.lock().ok()?;
        while let Some((conn, since)) = idle.pop() {
            if since.elapsed() <= MAX_IDLE {
                return Some(conn);
            }
            // too old: dropping it closes the socket, with no QUIT to wait for
        }
        None
    }

    fn check_in(&self, conn: AsyncSmtpConnection) {
        if conn.has_broken() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.max_idle
        {
            idle.push((conn, Instant::now()));
        }
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        let target = &self.target;
        let open = async {
            let stream = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
                .await
                .map_err(|e| SendError::Transient(format!("SMTP connect: {}", e.kind())))?;
            // every SMTP step is one write and a wait for the reply: nothing for Nagle to
            // coalesce, only the 40 ms stall described in the module docs
            stream
                .set_nodelay(true)
                .map_err(|e| SendError::Transient(format!("SMTP socket: {}", e.kind())))?;
            let mut conn =
                AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello)
                    .await
                    .map_err(|e| classify(&e, "greeting"))?;
            if let Some(credentials) = &target.credentials {
                conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                    .await
                    .map_err(|e| classify(&e, "AUTH"))?;
            }
            Ok(conn)
        };
        tokio::time::timeout(target.connect_timeout, open)
            .await
            .unwrap_or_else(|_| {
                Err(SendError::Transient(format!(
                    "SMTP connect timed out after {:?}",
                    target.connect_timeout
                )))
            })
    }
}

impl Failure {
    fn into_error(self) -> SendError {
        match self {
            Failure::Stale(e) | Failure::Other(e) => e,
        }
    }
}

/// MAIL's parameters, as lettre's own `send` chooses them; a message the server cannot take
/// (non-ASCII without SMTPUTF8 or 8BITMIME) is a permanent failure.
fn mail_parameters(
    conn: &AsyncSmtpConnection,
    envelope: &Envelope,
    message: &[u8],
) -> Result<Vec<MailParameter>, Failure> {
    let mut parameters = Vec::new();
    let non_ascii_address = envelope
        .from()
        .into_iter()
        .chain(envelope.to())
        .any(|a| !AsRef::<str>::as_ref(a).is_ascii());
    if non_ascii_address {
        if !conn.server_info().supports_feature(Extension::SmtpUtfEight) {
            return Err(Failure::Other(SendError::Permanent(
                "the server does not take non-ASCII addresses (no SMTPUTF8)".into(),
            )));
        }
        parameters.push(MailParameter::SmtpUtfEight);
    }
    if !message.is_ascii() {
        if !conn.server_info().supports_feature(Extension::EightBitMime) {
            return Err(Failure::Other(SendError::Permanent(
                "the server does not take 8-bit messages (no 8BITMIME)".into(),
            )));
        }
        parameters.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    Ok(parameters)
}

/// A refusal by reply code: 5xx permanent, 4xx transient. The reply text is left out: it
/// usually names the recipient.
fn refusal(e: &lettre::transport::smtp::Error, step: &str) -> SendError {
    let code = e
        .status()
        .map(|c| c.to_string())
        .unwrap_or_else(|| "?".into());
    if e.is_permanent() {
        SendError::Permanent(format!("SMTP {code} at {step}"))
    } else {
        SendError::Transient(format!("SMTP {code} at {step}"))
    }
}

/// Any failure before a message was handed over: refusals by code, our own checks
/// (`is_client`) permanent, the rest (network, unparseable replies) transient.
fn classify(e: &lettre::transport::smtp::Error, step: &str) -> SendError {
    if e.is_transient() || e.is_permanent() {
        refusal(e, step)
    } else if e.is_client() {
        SendError::Permanent(format!("SMTP {step}: {e}"))
    } else {
        SendError::Transient(format!("SMTP {step} failed ({})", kind(e)))
    }
}

/// What kind of failure, without any text the server sent.
fn kind(e: &lettre::transport::smtp::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_response() {
        "unreadable reply"
    } else {
        "connection lost"
    }
}
