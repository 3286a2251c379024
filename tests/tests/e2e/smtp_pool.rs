//! Our SMTP client pool (`shared::email::smtp`) against the real-SMTP sink: sessions are
//! reused; a session the server closed while idle costs no failed send; a message whose
//! verdict never comes is reported as "outcome unknown" and never resent by the pool;
//! refusals keep their class and leave the recipient's address out of the error.
use std::time::Duration;

use e2e::smtp::{Mode, SmtpSink};
use lettre::address::Envelope;
use shared::email::{
    SendError,
    smtp::{SmtpPool, SmtpTarget},
};

fn pool(sink: &SmtpSink, data_timeout: Duration) -> SmtpPool {
    let mut target = SmtpTarget::new(sink.addr.ip().to_string(), sink.addr.port(), None);
    target.data_timeout = data_timeout;
    SmtpPool::new(target, 4)
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
async fn a_421_at_mail_on_a_reused_session_is_sent_on_a_new_one() {
    let sink = SmtpSink::start().await;
    let pool = pool(&sink, Duration::from_secs(10));
    pool.send(&envelope(), &message(0)).await.expect("first");
    sink.close_next_mail();
    pool.send(&envelope(), &message(1))
        .await
        .expect("sent on a new session");
    assert_eq!(sink.count(), 2);
    assert_eq!(sink.sessions(), 2);
}

#[tokio::test]
async fn no_verdict_after_the_message_is_an_unknown_outcome_and_never_resent() {
    let sink = SmtpSink::start().await;
    let pool = pool(&sink, Duration::from_secs(10));
    // warm a session, so that the pool would be tempted to retry on a new one
    pool.send(&envelope(), &message(0)).await.expect("first");
    sink.set_mode(Mode::AcceptThenHangUp);
    let result = pool.send(&envelope(), &message(1)).await;
    assert!(matches!(result, Err(SendError::Unknown(_))), "{result:?}");
    let result = result.unwrap_err();
    assert!(result.may_have_been_accepted());
    let ids: Vec<String> = sink.messages().iter().map(|m| m.message_id()).collect();
    assert_eq!(
        ids,
        ["<pool-0@test>", "<pool-1@test>"],
        "the second was not resent"
    );
}

#[tokio::test]
async fn a_server_that_never_answers_the_message_is_cut_off_with_an_unknown_outcome() {
    let sink = SmtpSink::start().await;
    sink.set_delay(Duration::from_secs(30));
    let pool = pool(&sink, Duration::from_millis(300));
    let started = std::time::Instant::now();
    let result = pool.send(&envelope(), &message(0)).await;
    assert!(
        matches!(result, Err(SendError::Unknown(ref e)) if e.contains("no SMTP verdict")),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // the stuck session is not reused: the next send opens a new one
    sink.set_delay(Duration::ZERO);
    pool.send(&envelope(), &message(1)).await.expect("sent");
    assert_eq!(sink.sessions(), 2);
}

#[tokio::test]
async fn refusals_keep_their_class_and_leave_the_address_out() {
    let sink = SmtpSink::start().await;
    let pool = pool(&sink, Duration::from_secs(10));
    sink.set_mode(Mode::Transient);
    let transient = pool.send(&envelope(), &message(0)).await;
    assert!(
        matches!(transient, Err(SendError::Transient(_))),
        "{transient:?}"
    );
    sink.set_mode(Mode::Permanent);
    let permanent = pool.send(&envelope(), &message(1)).await;
    match &permanent {
        Err(SendError::Permanent(e)) => {
            assert!(e.contains("550"), "{e}");
            assert!(
                !e.contains("someone@example.test"),
                "the address leaked: {e}"
            );
        }
        other => panic!("{other:?}"),
    }
    sink.set_mode(Mode::Accept);
    pool.send(&envelope(), &message(2)).await.expect("sent");
    assert_eq!(sink.count(), 1);
}
