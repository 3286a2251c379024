//! The calendar invitation a booking email carries (iCalendar, RFC 5545, sent as an iTIP
//! message, RFC 5546), built with the `icalendar` crate. Pure: no I/O.
//!
//! One event per booking: its UID ([`super::identity::event_uid`]) is the same in every
//! email about the booking, and its SEQUENCE is the booking version the email is about, so a
//! calendar that has the event updates it in place on a reschedule (REQUEST, higher
//! SEQUENCE) and removes it on a cancellation (CANCEL, STATUS:CANCELLED), and ignores an
//! older email that arrives late. Times are exact instants in UTC: no VTIMEZONE to get
//! wrong, and every calendar shows them in its owner's zone. The event names the two
//! parties and nothing else about them (no notes, no reasons, not the other's address).
use icalendar::{
    Alarm, Attendee, Calendar, Component, Event, EventLike, EventStatus, PartStat, Property, Role,
    Trigger,
};

use super::{identity, render::BookingEmailView};
use crate::jobs::EmailKind;

/// The iTIP method of an invitation: what the receiving calendar should do with the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Add the event, or update it if it has a lower SEQUENCE.
    Request,
    /// Remove the event.
    Cancel,
}

impl Method {
    /// The value of `METHOD:` and of the calendar part's `method=` parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Request => "REQUEST",
            Method::Cancel => "CANCEL",
        }
    }
}

/// A calendar invitation: its method and the `.ics` text (CRLF line ends, as RFC 5545 says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    pub method: Method,
    pub ics: String,
}

/// Who the invitations come from: the platform, at its `MAIL_FROM` address.
const ORGANIZER_NAME: &str = "InstaInstru";
const PRODUCT_ID: &str = "-//InstaInstru//Booking emails//EN";
/// How long before the lesson the calendar reminds its owner.
const ALARM_BEFORE_MINUTES: i64 = 30;

/// The invitation an email of `view.kind` carries: a request for a confirmation or a
/// reschedule, a cancel for a cancellation, none for a reminder (the event is already in the
/// calendar, and a reminder changes nothing about it).
pub fn invitation(view: &BookingEmailView<'_>) -> Option<Invitation> {
    let method = match view.kind {
        EmailKind::Confirmation | EmailKind::Reschedule => Method::Request,
        EmailKind::Cancellation => Method::Cancel,
        EmailKind::Reminder => return None,
    };
    Some(Invitation {
        method,
        ics: calendar(view, method).to_string(),
    })
}

fn calendar(view: &BookingEmailView<'_>, method: Method) -> Calendar {
    let (student, instructor) = if view.to_instructor {
        (view.other_party_name, view.recipient_name)
    } else {
        (view.recipient_name, view.other_party_name)
    };
    let manage = identity::manage_url(view.app_url, view.booking_id);
    let summary = format!(
        "{} lesson with {}",
        view.service_name, view.other_party_name
    );
    let description = format!(
        "{} lesson, {} minutes. Student: {student}. Instructor: {instructor}.\n\
         Manage this lesson: {manage}",
        view.service_name, view.duration_minutes
    );
    let organizer_address = view
        .mail_from
        .parse::<lettre::message::Mailbox>()
        .map(|mailbox| mailbox.email.to_string())
        .unwrap_or_else(|_| view.mail_from.to_string());
    let uid = identity::event_uid(view.booking_id, view.mail_from);
    let mut event = Event::new();
    event
        .uid(&uid)
        // a version is at least 1; SEQUENCE counts from 0, so both fit
        .sequence(u32::try_from(view.booking_version).unwrap_or(0))
        .timestamp(view.now)
        .starts(view.starts_at)
        .ends(view.ends_at)
        .summary(&summary)
        .description(&description)
        .url(&manage)
        .append_property(
            Property::new("ORGANIZER", format!("mailto:{organizer_address}"))
                .add_parameter("CN", ORGANIZER_NAME)
                .done(),
        )
        .attendee(
            Attendee::new(format!("mailto:{}", view.recipient_email))
                .cn(view.recipient_name.to_string())
                .role(Role::ReqParticipant)
                .partstat(PartStat::Accepted)
                // the organizer is a no-reply address: nobody reads an answer
                .rsvp(false),
        )
        .add_property("TRANSP", "OPAQUE");
    match method {
        Method::Request => {
            let mut alarm = Alarm::display(
                &format!(
                    "{} lesson in {ALARM_BEFORE_MINUTES} minutes",
                    view.service_name
                ),
                Trigger::before_start(chrono::Duration::minutes(ALARM_BEFORE_MINUTES)),
            );
            // the crate writes a DTSTAMP (the clock's now) and a random UID into every
            // component that has none, alarms included: give them ours, so an invitation
            // is a function of the booking and the send time alone (RFC 9074 names alarms
            // by UID; clients ignore an alarm's DTSTAMP)
            alarm
                .uid(&format!("alarm-{ALARM_BEFORE_MINUTES}m-{uid}"))
                .timestamp(view.now);
            event.status(EventStatus::Confirmed).alarm(alarm.done());
        }
        Method::Cancel => {
            event.status(EventStatus::Cancelled);
        }
    }
    let mut calendar = Calendar::empty();
    calendar
        .append_property(Property::new("PRODID", PRODUCT_ID))
        .append_property(Property::new("VERSION", "2.0"))
        .append_property(Property::new("CALSCALE", "GREGORIAN"))
        .append_property(Property::new("METHOD", method.as_str()))
        .push(event.done());
    calendar.done()
}
