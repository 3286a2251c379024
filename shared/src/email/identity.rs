//! The names that make a booking's emails recognisable to the programs that receive them:
//! the Message-ID of each email (a receiver drops a resent copy by it), the UID of the
//! lesson's calendar event (a calendar updates or removes the event by it), and the link to
//! the lesson in the web app. One definition each, used by the worker and the tests alike.
use lettre::message::Mailbox;

use crate::jobs::BookingEmail;

/// The domain of the `MAIL_FROM` address (`"InstaInstru <no-reply@instainstru.test>"` gives
/// `"instainstru.test"`): Message-IDs and UIDs are named on the domain that sends them, as
/// RFC 5322 and RFC 5545 advise. `"localhost"` if it is not an address (configuration
/// refuses such a `MAIL_FROM` at start-up).
pub fn mail_domain(mail_from: &str) -> String {
    mail_from
        .parse::<Mailbox>()
        .map(|mailbox| mailbox.email.domain().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// The Message-ID of one email: what it is (booking, kind, recipient, booking version), the
/// same key as the email ledger's, so every send of that email carries the same id.
pub fn message_id(email: &BookingEmail, mail_from: &str) -> String {
    format!(
        "<booking-{}-{}-{}-v{}@{}>",
        email.booking_id,
        email.kind.as_str(),
        email.party.as_str(),
        email.booking_version,
        mail_domain(mail_from)
    )
}

/// The Message-ID of the "your data export is ready" email of export request `request_id`:
/// the same key as its ledger row's, so a resend carries the same id.
pub fn export_ready_message_id(request_id: i64, mail_from: &str) -> String {
    format!("<export-ready-{request_id}@{}>", mail_domain(mail_from))
}

/// The UID of a booking's calendar event: one per booking, in every invitation about it
/// (confirmation, reschedule, cancellation, to either party), so that a reschedule moves the
/// event and a cancellation removes it instead of adding another.
pub fn event_uid(booking_id: i64, mail_from: &str) -> String {
    format!("booking-{booking_id}@{}", mail_domain(mail_from))
}

/// The page of a booking in the web app. The booking id only: the app asks its user to sign
/// in, so a forwarded email hands nobody else the lesson.
pub fn manage_url(app_url: &str, booking_id: i64) -> String {
    format!("{}/bookings/{booking_id}", app_url.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::{EmailKind, Party};

    #[test]
    fn ids_are_named_on_the_senders_domain() {
        let email = BookingEmail {
            booking_id: 42,
            kind: EmailKind::Reschedule,
            party: Party::Instructor,
            booking_version: 3,
        };
        let from = "InstaInstru <no-reply@mail.instainstru.com>";
        assert_eq!(
            message_id(&email, from),
            "<booking-42-reschedule-instructor-v3@mail.instainstru.com>"
        );
        assert_eq!(event_uid(42, from), "booking-42@mail.instainstru.com");
        assert_eq!(
            message_id(&email, "bare@example.org"),
            "<booking-42-reschedule-instructor-v3@example.org>"
        );
    }

    #[test]
    fn the_manage_link_carries_the_booking_id_only() {
        assert_eq!(
            manage_url("https://app.instainstru.com/", 7),
            "https://app.instainstru.com/bookings/7"
        );
        assert_eq!(
            manage_url("http://localhost:3000", 7),
            "http://localhost:3000/bookings/7"
        );
    }
}
