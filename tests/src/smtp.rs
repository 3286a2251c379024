//! A small SMTP server speaking real SMTP to lettre: it records every accepted message, and
//! can be told to answer transient (4xx) or permanent (5xx) failures, or to be slow.
use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
};

/// One message the sink accepted.
#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
    /// When the sink accepted it (answered 250).
    pub received_at: std::time::Instant,
}

impl Received {
    /// The Subject header, unfolded as a mail client shows it.
    pub fn subject(&self) -> String {
        header(&self.data, "Subject")
    }

    pub fn message_id(&self) -> String {
        header(&self.data, "Message-ID")
    }

    /// The body with quoted-printable soft breaks removed, for searching text.
    pub fn text(&self) -> String {
        self.data
            .replace("=\r\n", "")
            .replace("=3D", "=")
            .replace("=20", " ")
    }
}

fn header(data: &str, name: &str) -> String {
    let mut value = String::new();
    let mut in_header = false;
    for line in data.split("\r\n") {
        if line.is_empty() {
            break;
        }
        if in_header && (line.starts_with(' ') || line.starts_with('\t')) {
            // unfolding (RFC 5322 2.2.3) removes the line break only, not the space after it
            value.push_str(line);
            continue;
        }
        in_header = false;
        if let Some((key, rest)) = line.split_once(':')
            && key.eq_ignore_ascii_case(name)
        {
            value = rest.trim().to_string();
            in_header = true;
        }
    }
    value
}

/// How the sink answers the end of DATA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    Accept = 0,
    Transient = 1,
    Permanent = 2,
    /// Takes the message, then drops the connection without a reply: the client cannot know.
    AcceptThenHangUp = 3,
}

/// A running sink.
#[derive(Clone)]
pub struct SmtpSink {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    mode: Arc<AtomicU8>,
    delay_ms: Arc<AtomicU64>,
    sessions: Arc<AtomicU64>,
    hang_up: Arc<tokio::sync::Notify>,
    close_next_mail: Arc<AtomicBool>,
}

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind smtp sink");
        let sink = SmtpSink {
            addr: listener.local_addr().expect("sink address"),
            received: Arc::default(),
            mode: Arc::new(AtomicU8::new(Mode::Accept as u8)),
            delay_ms: Arc::default(),
            sessions: Arc::default(),
            hang_up: Arc::default(),
            close_next_mail: Arc::default(),
        };
        let server = sink.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let server = server.clone();
                server.sessions.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let _ = server.session(stream).await;
                });
            }
        });
        sink
    }

    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// SMTP sessions accepted so far.
    pub fn sessions(&self) -> u64 {
        self.sessions.load(Ordering::SeqCst)
    }

    /// Closes every session waiting for its client's next command, as a server timing out
    /// idle sessions does.
    pub fn hang_up_idle(&self) {
        self.hang_up.notify_waiters();
    }

    /// Answers the next MAIL with `421` and closes that session, as a server does that
    /// announces its idle timeout only when the client speaks again.
    pub fn close_next_mail(&self) {
        self.close_next_mail.store(true, Ordering::SeqCst);
    }

    fn record(&self, from: &str, to: &[String], data: String) {
        if let Ok(mut received) = self.received.lock() {
            received.push(Received {
                from: from.to_string(),
                to: to.to_vec(),
                data,
                received_at: std::time::Instant::now(),
            });
        }
    }

    pub fn messages(&self) -> Vec<Received> {
        self.received.lock().map(|m| m.clone()).unwrap_or_default()
    }

    pub fn count(&self) -> usize {
        self.received.lock().map(|m| m.len()).unwrap_or_default()
    }

    async fn session(&self, stream: tokio::net::TcpStream) -> std::io::Result<()> {
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read);
        write.write_all(b"220 sink.test ESMTP\r\n").await?;
        let (mut from, mut to) = (String::new(), Vec::new());
        let mut line = String::new();
        loop {
            line.clear();
            let read = tokio::select! {
                read = lines.read_line(&mut line) => read?,
                _ = self.hang_up.notified() => return Ok(()),
            };
            if read == 0 {
                return Ok(());
            }
            let command = line.trim_end().to_string();
            let upper = command.to_ascii_uppercase();
            if upper.starts_with("EHLO") {
                write
                    .write_all(b"250-sink.test\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
                    .await?;
            } else if upper.starts_with("HELO") {
                write.write_all(b"250 sink.test\r\n").await?;
            } else if upper.starts_with("MAIL FROM:") {
                if self.close_next_mail.swap(false, Ordering::SeqCst) {
                    write
                        .write_all(b"421 4.4.2 idle too long, closing\r\n")
                        .await?;
                    return Ok(());
                }
                from = command[10..].trim().to_string();
                to.clear();
                write.write_all(b"250 OK\r\n").await?;
            } else if upper.starts_with("RCPT TO:") {
                to.push(command[8..].trim().trim_matches(['<', '>']).to_string());
                write.write_all(b"250 OK\r\n").await?;
            } else if upper == "DATA" {
                write.write_all(b"354 go ahead\r\n").await?;
                let mut data = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" || line == ".\n" {
                        break;
                    }
                    data.push_str(
                        line.strip_prefix('.')
                            .filter(|_| line.starts_with(".."))
                            .unwrap_or(&line),
                    );
                }
                let delay = self.delay_ms.load(Ordering::SeqCst);
                if delay > 0 {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                match self.mode.load(Ordering::SeqCst) {
                    3 => {
                        self.record(&from, &to, data);
                        return Ok(());
                    }
                    1 => write.write_all(b"451 4.3.0 try again later\r\n").await?,
                    2 => {
                        // as real servers do, the refusal names the recipient
                        let reply =
                            format!("550 5.1.1 <{}>: mailbox unavailable\r\n", to.join(","));
                        write.write_all(reply.as_bytes()).await?
                    }
                    _ => {
                        self.record(&from, &to, data);
                        write.write_all(b"250 OK queued\r\n").await?;
                    }
                }
            } else if upper == "QUIT" {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            } else if upper == "RSET" || upper == "NOOP" {
                write.write_all(b"250 OK\r\n").await?;
            } else {
                write.write_all(b"502 not implemented\r\n").await?;
            }
        }
    }
}
