//! Our SMTP client pool (`shared::email::smtp`) against the real-SMTP sink: sessions are
//! reused, a session the server closed while idle costs no failed send, a stuck server is
//! cut off by the send timeout, and refusals keep their class.
use std::time::Duration;

use e2e::smtp::{Mode, SmtpSink};
use lettre::address::Envelope;
use shared::email::{
    SendError,
    smtp::{SmtpPool, SmtpTarget},
};

fn pool(sink: &SmtpSink, send_timeout: Duration) -> SmtpPool {
    SmtpPool::new(
        SmtpTarget {
            host: sink.addr.ip().to_string(),
            port: sink.addr.port(),
            credentials: None,
            connect_timeout: Duration::from_secs(5),
            send_timeout,
        },
        4,
    )
}

fn envelope() -> Envelope {
    Envelope::new(
        Some("no-reply@instainstru.test".parse().expect("from")),
        vec!["someone@example.test".parse().expect("to")],
    )
    .expect("envelope")
}

fn message(n: usize) -> Vec<u8> {
    format!("Subject: pool test {n}\r\nMessage-ID: <pool-{n}@test>\r\n\r\nbody {n}\r\n")
        .into_bytes()
}

#[tokio::test]
async fn sequential_sends_share_one_session() {
    let sink = SmtpSink::start().await;
    let pool = pool(&sink, Duration::from_secs(10));
    for n in 0..5 {
        pool.send(&envelope(), &message(n)).await.expect("sent");
    }
    assert_eq!(sink.count(), 5);
    assert_eq!(sink.sessions(), 1, "one session carried all five messages");
}

#[tokio::test]
async fn a_session_closed_by_the_server_while_idle_fails_no_send() {
    let sink = SmtpSink::start().await;
    let pool = pool(&sink, Duration::from_secs(10));
    pool.send(&envelope(), &message(0)).await.expect("first");
    sink.hang_up_idle();
    // let the close reach the client's socket
    tokio::time::sleep(Duration::from_millis(100)).await;
    pool.send(&envelope(), &message(1))
        .await
        .expect("sent on a new session");
    assert_eq!(sink.count(), 2);
    assert_eq!(sink.sessions(), 2);
    let ids: Vec<String> = sink.messages().iter().map(|m| m.message_id()).collect();
    assert_eq!(ids, ["<pool-0@test>", "<pool-1@test>"], "each sent once");
}

#[tokio::test]
async fn a_server_that_stops_answering_is_cut_off_by_the_send_timeout() {
    let sink = SmtpSink::start().await;
    sink.set_delay(Duration::from_secs(30));
    let pool = pool(&sink, Duration::from_millis(300));
    let started = std::time::Instant::now();
    let result = pool.send(&envelope(), &message(0)).await;
    assert!(
        matches!(result, Err(SendError::Transient(ref e)) if e.contains("timed out")),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // the stuck session is not reused: the next send opens a new one
    sink.set_delay(Duration::ZERO);
    pool.send(&envelope(), &message(1)).await.expect("sent");
    assert_eq!(sink.sessions(), 2);
}

#[tokio::test]
async fn refusals_keep_their_class() {
    let sink = SmtpSink::start().await;
    let pool = pool(&sink, Duration::from_secs(10));
    sink.set_mode(Mode::Transient);
    assert!(matches!(
        pool.send(&envelope(), &message(0)).await,
        Err(SendError::Transient(_))
    ));
    sink.set_mode(Mode::Permanent);
    assert!(matches!(
        pool.send(&envelope(), &message(1)).await,
        Err(SendError::Permanent(_))
    ));
    sink.set_mode(Mode::Accept);
    pool.send(&envelope(), &message(2)).await.expect("sent");
    assert_eq!(sink.count(), 1);
}
