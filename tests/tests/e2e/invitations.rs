//! Calendar invitations: every email about a booking describes one calendar event (one UID),
//! which a confirmation adds, a reschedule moves in place (higher SEQUENCE) and a
//! cancellation removes (METHOD:CANCEL, STATUS:CANCELLED); reminders carry none. Each
//! invitation is read back from the sent MIME message with the `icalendar` crate's parser,
//! and checked by a third-party implementation (Python's `icalendar` package).
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use e2e::{
    eventually,
    mail::{self, EventFacts},
    platform::TestApp,
};
use reqwest::Method;
use shared::{
    email::{self, BookingEmailView, render_booking_email},
    jobs::{BookingEmail, EmailKind, Party},
};

const MAIL_FROM: &str = "InstaInstru <no-reply@instainstru.test>";

/// The layout Gmail, Outlook and Apple Mail show as an invitation.
fn invitation_layout(method: &str) -> Vec<String> {
    vec![
        "multipart/mixed".into(),
        "  multipart/alternative".into(),
        "    text/plain".into(),
        "    text/html".into(),
        format!("    text/calendar; method={method}"),
        "  application/ics (attachment invite.ics)".into(),
    ]
}

fn utc(y: i32, mo: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, 0, 0)
        .single()
        .expect("a valid instant")
}

/// The student's email of `kind` about booking 42 at `version`, as the worker composes it.
fn composed(kind: EmailKind, version: i32, starts_at: DateTime<Utc>) -> Vec<u8> {
    let view = BookingEmailView {
        kind,
        booking_id: 42,
        booking_version: version,
        recipient_name: "Sam Student",
        recipient_email: "student@example.com",
        recipient_timezone: "America/New_York",
        to_instructor: false,
        other_party_name: "Ida Instructor",
        service_name: "Piano",
        duration_minutes: 60,
        price_cents: 6500,
        starts_at,
        ends_at: starts_at + chrono::Duration::minutes(60),
        previous_starts_at: None,
        cancellation_reason: Some("a private reason"),
        starts_soon: false,
        mail_from: MAIL_FROM,
        app_url: "http://localhost:3000",
        now: utc(2026, 3, 1, 12),
    };
    let rendered = render_booking_email(&view).expect("renders");
    let id = email::message_id(
        &BookingEmail {
            booking_id: 42,
            kind,
            party: Party::Student,
            booking_version: version,
        },
        MAIL_FROM,
    );
    email::compose(
        MAIL_FROM,
        "Sam Student",
        "student@example.com",
        &id,
        &rendered,
    )
    .expect("composes")
    .formatted()
}

/// The invitation of one sent message, checked for its layout and for the attachment being
/// the same text; with its facts as the `icalendar` crate's parser reads them.
fn read_invitation(raw: &[u8], method: &str) -> (String, EventFacts) {
    assert_eq!(mail::structure(raw), invitation_layout(method));
    let invitation = mail::invitation(raw).expect("a calendar part");
    assert_eq!(invitation.content_method, method);
    assert_eq!(
        invitation.attachment.as_deref(),
        Some(invitation.ics.as_str()),
        "invite.ics is the calendar part's text"
    );
    let facts = mail::event_facts(&invitation.ics);
    assert_eq!(facts.method, method, "METHOD matches the part's method");
    (invitation.ics, facts)
}

/// Confirmed, moved, then cancelled: the same event each time, in the order a calendar
/// applies them.
fn assert_one_event_moved_then_gone(
    facts: &[EventFacts],
    uid: &str,
    first: DateTime<Utc>,
    moved: DateTime<Utc>,
) {
    let [confirmed, rescheduled, cancelled] = facts else {
        panic!("three invitations: {facts:?}");
    };
    for f in facts {
        assert_eq!(f.uid, uid, "one UID per booking");
        assert_eq!(f.ends_at - f.starts_at, chrono::Duration::minutes(60));
        assert_eq!(f.summary, "Piano lesson with Ida Instructor");
        // the two parties' names and nothing else personal
        assert!(!f.description.contains('@'), "{}", f.description);
        assert!(!f.description.contains("reason"), "{}", f.description);
    }
    assert!(confirmed.sequence < rescheduled.sequence);
    assert!(rescheduled.sequence < cancelled.sequence);
    assert_eq!(
        (confirmed.method.as_str(), confirmed.status.as_str()),
        ("REQUEST", "CONFIRMED")
    );
    assert_eq!(
        (rescheduled.method.as_str(), rescheduled.status.as_str()),
        ("REQUEST", "CONFIRMED")
    );
    assert_eq!(
        (cancelled.method.as_str(), cancelled.status.as_str()),
        ("CANCEL", "CANCELLED")
    );
    assert_eq!(confirmed.starts_at, first, "DTSTART is the booking's start");
    assert_eq!(rescheduled.starts_at, moved, "moved in place");
    assert_eq!(cancelled.starts_at, moved);
    assert_eq!(confirmed.alarms, ["-PT1800S"], "a 30-minute alarm");
    assert_eq!(rescheduled.alarms, ["-PT1800S"]);
}

#[test]
fn the_emails_of_one_booking_describe_one_event_requested_moved_then_cancelled() {
    let first = utc(2026, 3, 6, 15);
    let moved = utc(2026, 3, 10, 14);
    let confirmation = composed(EmailKind::Confirmation, 1, first);
    let reschedule = composed(EmailKind::Reschedule, 2, moved);
    let cancellation = composed(EmailKind::Cancellation, 3, moved);

    let (confirmed_ics, confirmed) = read_invitation(&confirmation, "REQUEST");
    let (moved_ics, rescheduled) = read_invitation(&reschedule, "REQUEST");
    let (cancelled_ics, cancelled) = read_invitation(&cancellation, "CANCEL");

    assert_one_event_moved_then_gone(
        &[confirmed, rescheduled, cancelled],
        &email::event_uid(42, MAIL_FROM),
        first,
        moved,
    );
    mail::validate_with_python(&[
        ("confirmation", &confirmed_ics),
        ("reschedule", &moved_ics),
        ("cancellation", &cancelled_ics),
    ]);
}

#[test]
fn a_reminder_carries_no_invitation() {
    let reminder = composed(EmailKind::Reminder, 1, utc(2026, 3, 6, 15));
    assert!(mail::invitation(&reminder).is_none());
    assert_eq!(
        mail::structure(&reminder),
        ["multipart/alternative", "  text/plain", "  text/html"]
    );
}

#[tokio::test]
async fn book_reschedule_cancel_leaves_the_student_one_event_moved_then_gone() {
    let app = TestApp::start().await;
    let token = app.student().await;
    let first = app.lesson_at(3, 10);
    let moved = app.lesson_at(4, 15);
    let student = |app: &TestApp| -> Vec<e2e::smtp::Received> {
        app.smtp
            .messages()
            .into_iter()
            .filter(|m| m.to == ["student@example.com"])
            .collect()
    };

    let (status, booking) = app.book(&token, first).await;
    assert_eq!(status, 201, "{booking}");
    let id = booking["id"].as_i64().expect("booking id");
    eventually(Duration::from_secs(20), "the confirmation", || async {
        student(&app).len() == 1
    })
    .await;
    let (status, body) = app
        .send(
            Method::POST,
            &format!("/api/v1/bookings/{id}/reschedule"),
            Some(&token),
            Some(serde_json::json!({"start": moved.to_rfc3339()})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    eventually(Duration::from_secs(20), "the reschedule email", || async {
        student(&app).len() == 2
    })
    .await;
    let (status, body) = app
        .send(
            Method::POST,
            &format!("/api/v1/bookings/{id}/cancel"),
            Some(&token),
            Some(serde_json::json!({"reason": "a private reason"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    eventually(
        Duration::from_secs(20),
        "the cancellation email",
        || async { student(&app).len() == 3 },
    )
    .await;

    let mailbox = student(&app);
    let kinds = [
        (EmailKind::Confirmation, 1, "REQUEST"),
        (EmailKind::Reschedule, 2, "REQUEST"),
        (EmailKind::Cancellation, 3, "CANCEL"),
    ];
    let manage = email::manage_url(&app.config.app_url, id);
    let mut facts = Vec::new();
    let mut texts = Vec::new();
    for (message, (kind, version, method)) in mailbox.iter().zip(kinds) {
        let expected_id = email::message_id(
            &BookingEmail {
                booking_id: id,
                kind,
                party: Party::Student,
                booking_version: version,
            },
            &app.config.mail_from,
        );
        assert_eq!(message.message_id(), expected_id);
        // the subject, as a client shows it, names the time as the body does: in the
        // student's zone, with its abbreviation (a long subject is folded in the raw
        // message, sometimes between "AM" and "EST")
        let starts_at = if kind == EmailKind::Confirmation {
            first
        } else {
            moved
        };
        let shown = email::render::local_time(starts_at, "America/New_York");
        assert!(
            message.subject().ends_with(&shown),
            "{kind:?}: {}",
            message.subject()
        );
        assert!(message.text().contains(&format!("When:   {shown}")));
        assert!(message.text().contains(&manage), "{kind:?} links {manage}");
        let (ics, f) = read_invitation(message.data.as_bytes(), method);
        facts.push(f);
        texts.push(ics);
    }
    assert_one_event_moved_then_gone(
        &facts,
        &email::event_uid(id, &app.config.mail_from),
        first,
        moved,
    );
    mail::validate_with_python(&[
        ("confirmation", &texts[0]),
        ("reschedule", &texts[1]),
        ("cancellation", &texts[2]),
    ]);
}
