//! Our SMTP client: lettre's protocol (`AsyncSmtpConnection`) over sockets we open ourselves,
//! kept in a small pool of idle connections.
//!
//! Why not lettre's `AsyncSmtpTransport` and its pool (lettre 0.11.23, the newest release):
//! - its sockets keep Nagle's algorithm on. lettre writes the message body and the closing
//!   `.` in two writes, so the `.` waits for the server's delayed ACK: 40 ms on every email
//!   (measured here: 42-48 ms of a 47 ms job; upstream fixed it in lettre PR #1159, not yet
//!   released). That alone capped a worker at about 650 emails/s at concurrency 32;
//! - its pool keeps at most `max_size` idle connections and closes the rest as they come
//!   back, so a busy moment costs new TCP sessions, banners and EHLOs;
//! - its timeout bounds the connect only: a server that stops answering mid-exchange would
//!   hold a worker slot forever. Here the whole exchange is bounded.
use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use lettre::{
    address::Envelope,
    transport::smtp::{
        authentication::{Credentials, Mechanism},
        client::AsyncSmtpConnection,
        extension::ClientId,
    },
};

use super::SendError;

/// Idle sessions older than this are closed rather than reused: servers time idle sessions
/// out after minutes, and one that did would fail the next send on it.
const MAX_IDLE: Duration = Duration::from_secs(60);

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct SmtpTarget {
    pub host: String,
    pub port: u16,
    pub credentials: Option<Credentials>,
    pub connect_timeout: Duration,
    /// The bound on one whole send (MAIL, RCPT, DATA and the message).
    pub send_timeout: Duration,
}

/// A pool of SMTP sessions; at most `max_idle` are kept between sends, as many as there are
/// concurrent senders are opened.
pub struct SmtpPool {
    target: SmtpTarget,
    hello: ClientId,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
    max_idle: usize,
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

    /// Sends one message. Fails transient (4xx, network, timeout) or permanent (5xx).
    ///
    /// A reused session that fails without any SMTP reply was most likely closed by the
    /// server while idle: the message is sent once more on a new session. That is the same
    /// retry the job would make a little later, so it adds no duplicate risk of its own.
    pub async fn send(&self, envelope: &Envelope, message: &[u8]) -> Result<(), SendError> {
        let (conn, reused) = match self.idle() {
            Some(conn) => (conn, true),
            None => (self.connect().await?, false),
        };
        match self.attempt(conn, envelope, message).await {
            Err(Failure { stale: true, .. }) if reused => {
                let conn = self.connect().await?;
                self.attempt(conn, envelope, message)
                    .await
                    .map_err(|f| f.error)
            }
            other => other.map_err(|f| f.error),
        }
    }

    async fn attempt(
        &self,
        mut conn: AsyncSmtpConnection,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<(), Failure> {
        match tokio::time::timeout(self.target.send_timeout, conn.send(envelope, message)).await {
            Ok(Ok(_)) => {
                self.check_in(conn);
                Ok(())
            }
            Ok(Err(e)) => {
                // failures are rare: a fresh session beats reasoning about this one's state
                conn.abort().await;
                Err(Failure {
                    stale: !(e.is_transient() || e.is_permanent()),
                    error: classify(e),
                })
            }
            // mid-exchange: the session is dropped, and the server sees it close
            Err(_) => Err(Failure {
                stale: false,
                error: SendError::Transient(format!(
                    "SMTP exchange timed out after {:?}",
                    self.target.send_timeout
                )),
            }),
        }
    }

    /// The most recently used idle session young enough to trust.
    fn idle(&self) -> Option<AsyncSmtpConnection> {
        let mut idle = self.idle.lock().ok()?;
        while let Some((conn, since)) = idle.pop() {
            if since.elapsed() <= MAX_IDLE {
                return Some(conn);
            }
            // too old: dropping closes the socket without a QUIT round trip
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
                .map_err(|e| SendError::Transient(format!("SMTP connect: {e}")))?;
            // every SMTP step is one write and a wait for the reply: nothing for Nagle to
            // coalesce, only the 40 ms stall described in the module docs
            stream
                .set_nodelay(true)
                .map_err(|e| SendError::Transient(format!("SMTP socket: {e}")))?;
            let mut conn =
                AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello)
                    .await
                    .map_err(classify)?;
            if let Some(credentials) = &target.credentials {
                conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                    .await
                    .map_err(classify)?;
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

/// Why an attempt failed.
struct Failure {
    error: SendError,
    /// The session failed without any SMTP reply (closed or reset): it was dead before
    /// this message, not refused or stuck during it.
    stale: bool,
}

fn classify(e: lettre::transport::smtp::Error) -> SendError {
    if e.is_permanent() {
        SendError::Permanent(e.to_string())
    } else {
        SendError::Transient(e.to_string())
    }
}
