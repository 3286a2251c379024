//! Every booking email as its recipient reads it, kept as reviewed snapshots
//! (`shared/tests/snapshots/`): each kind (confirmation, cancellation, reschedule, reminder)
//! to each party (student, instructor), in a zone with daylight saving time
//! (America/New_York) and one without (Asia/Kolkata). Any change of wording, of a time's
//! format or of the calendar invitation shows in review as a changed file.
//!
//! A changed rendering fails the test; accept it with `INSTA_UPDATE=always cargo test -p
//! shared --test email_render` (or `cargo insta review`) and commit the snapshots.
use chrono::{DateTime, TimeZone, Utc};
use shared::{
    email::{BookingEmailView, render_booking_email},
    jobs::EmailKind,
};

const STUDENT: (&str, &str) = ("Sam Student", "sam@example.com");
const INSTRUCTOR: (&str, &str) = ("Ida Instructor", "ida@example.com");

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
        .single()
        .expect("a valid instant")
}

/// The lesson of every snapshot: booked for Friday 6 March 2026 at 15:00 UTC (10:00 AM EST),
/// moved across New York's spring-forward (8 March) to Tuesday 10 March at 14:00 UTC
/// (10:00 AM EDT), then cancelled; the reminder is for the new time.
fn view(kind: EmailKind, to_instructor: bool, timezone: &'static str) -> BookingEmailView<'static> {
    let (me, other) = if to_instructor {
        (INSTRUCTOR, STUDENT)
    } else {
        (STUDENT, INSTRUCTOR)
    };
    let booked = utc(2026, 3, 6, 15, 0);
    let moved = utc(2026, 3, 10, 14, 0);
    let (version, starts_at, previous, reason) = match kind {
        EmailKind::Confirmation => (1, booked, None, None),
        EmailKind::Reschedule => (2, moved, Some(booked), None),
        EmailKind::Reminder => (2, moved, None, None),
        EmailKind::Cancellation => (3, moved, None, Some("Feeling unwell")),
    };
    BookingEmailView {
        kind,
        booking_id: 42,
        booking_version: version,
        recipient_name: me.0,
        recipient_email: me.1,
        recipient_timezone: timezone,
        to_instructor,
        other_party_name: other.0,
        service_name: "Piano",
        duration_minutes: 60,
        price_cents: 6500,
        starts_at,
        ends_at: starts_at + chrono::Duration::minutes(60),
        previous_starts_at: previous,
        cancellation_reason: reason,
        starts_soon: false,
        mail_from: "InstaInstru <no-reply@instainstru.test>",
        app_url: "https://app.instainstru.test",
        now: utc(2026, 3, 2, 12, 0),
    }
}

/// Subject, both parts and the invitation, in one reviewable text (the invitation's CRLF
/// line ends shown as plain newlines).
fn shown(view: &BookingEmailView<'_>) -> String {
    let email = render_booking_email(view).expect("renders");
    let mut out = format!(
        "Subject: {}\n\n--- text/plain\n{}\n--- text/html\n{}\n",
        email.subject, email.text, email.html
    );
    match &email.calendar {
        Some(invitation) => out.push_str(&format!(
            "--- text/calendar; method={}\n{}",
            invitation.method.as_str(),
            invitation.ics.replace("\r\n", "\n")
        )),
        None => out.push_str("--- no calendar invitation\n"),
    }
    out
}

fn snapshot(kind: EmailKind, to_instructor: bool, timezone: &'static str, zone_name: &str) {
    let party = if to_instructor {
        "instructor"
    } else {
        "student"
    };
    let name = format!("{}-{party}-{zone_name}", kind.as_str());
    insta::assert_snapshot!(name, shown(&view(kind, to_instructor, timezone)));
}

macro_rules! snapshots {
    ($($test:ident: $kind:expr, $to_instructor:expr, $zone:expr, $zone_name:expr;)*) => {
        $(
            #[test]
            fn $test() {
                snapshot($kind, $to_instructor, $zone, $zone_name);
            }
        )*
    };
}

snapshots! {
    confirmation_to_student_in_new_york: EmailKind::Confirmation, false, "America/New_York", "new_york";
    confirmation_to_instructor_in_new_york: EmailKind::Confirmation, true, "America/New_York", "new_york";
    confirmation_to_student_in_kolkata: EmailKind::Confirmation, false, "Asia/Kolkata", "kolkata";
    confirmation_to_instructor_in_kolkata: EmailKind::Confirmation, true, "Asia/Kolkata", "kolkata";
    reschedule_to_student_in_new_york: EmailKind::Reschedule, false, "America/New_York", "new_york";
    reschedule_to_instructor_in_new_york: EmailKind::Reschedule, true, "America/New_York", "new_york";
    reschedule_to_student_in_kolkata: EmailKind::Reschedule, false, "Asia/Kolkata", "kolkata";
    reschedule_to_instructor_in_kolkata: EmailKind::Reschedule, true, "Asia/Kolkata", "kolkata";
    reminder_to_student_in_new_york: EmailKind::Reminder, false, "America/New_York", "new_york";
    reminder_to_instructor_in_new_york: EmailKind::Reminder, true, "America/New_York", "new_york";
    reminder_to_student_in_kolkata: EmailKind::Reminder, false, "Asia/Kolkata", "kolkata";
    reminder_to_instructor_in_kolkata: EmailKind::Reminder, true, "Asia/Kolkata", "kolkata";
    cancellation_to_student_in_new_york: EmailKind::Cancellation, false, "America/New_York", "new_york";
    cancellation_to_instructor_in_new_york: EmailKind::Cancellation, true, "America/New_York", "new_york";
    cancellation_to_student_in_kolkata: EmailKind::Cancellation, false, "Asia/Kolkata", "kolkata";
    cancellation_to_instructor_in_kolkata: EmailKind::Cancellation, true, "Asia/Kolkata", "kolkata";
}

/// A lesson booked inside the reminder lead: the one case that says no reminder follows.
#[test]
fn confirmation_of_a_lesson_that_starts_soon() {
    let mut soon = view(EmailKind::Confirmation, false, "America/New_York");
    soon.starts_soon = true;
    insta::assert_snapshot!("confirmation-student-new_york-starts_soon", shown(&soon));
}
