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

/// An idle connection is checked with a NOOP before reuse when it has waited this long: a
/// server may have closed it meanwhile (most time out idle sessions after minutes).
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(5);
/// Idle connections older than this are closed rather than reused.
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
    pub async fn send(&self, envelope: &Envelope, message: &[u8]) -> Result<(), SendError> {
        let mut conn = self.checkout().await?;
        match tokio::time::timeout(self.target.send_timeout, conn.send(envelope, message)).await {
            Ok(Ok(_)) => {
                self.check_in(conn);
                Ok(())
            }
            Ok(Err(e)) => {
                // failures are rare: a fresh session beats reasoning about this one's state
                conn.abort().await;
                Err(classify(e))
            }
            // the session is mid-exchange: drop it (the server sees the connection close)
            Err(_) => Err(SendError::Transient(format!(
                "SMTP exchange timed out after {:?}",
                self.target.send_timeout
            ))),
        }
    }

    /// An idle session that still answers, or a new one.
    async fn checkout(&self) -> Result<AsyncSmtpConnection, SendError> {
        loop {
            let next = self.idle.lock().ok().and_then(|mut idle| idle.pop());
            let Some((mut conn, since)) = next else {
                return self.connect().await;
            };
            let age = since.elapsed();
            if age > MAX_IDLE {
                conn.abort().await;
                continue;
            }
            if age > CHECK_AFTER_IDLE && !conn.test_connected().await {
                conn.abort().await;
                continue;
            }
            return Ok(conn);
        }
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

fn classify(e: lettre::transport::smtp::Error) -> SendError {
    if e.is_permanent() {
        SendError::Permanent(e.to_string())
    } else {
        SendError::Transient(e.to_string())
    }
}
