//! Renders booking emails from the templates in `shared/templates/`, with the lesson time in
//! the recipient's own time zone, and the calendar invitation they carry
//! ([`super::calendar`]). Pure: no I/O beyond the embedded template files.
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use minijinja::{Environment, Value, context};

use super::{
    calendar::{self, Invitation},
    identity,
};
use crate::jobs::EmailKind;

/// The subject, HTML part and plain-text part of one email, and the calendar invitation it
/// carries, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedEmail {
    pub subject: String,
    pub html: String,
    pub text: String,
    pub calendar: Option<Invitation>,
}

/// Everything a booking email shows; assembled by the worker from current database state.
#[derive(Debug, Clone)]
pub struct BookingEmailView<'a> {
    pub kind: EmailKind,
    pub booking_id: i64,
    /// The booking version the email is about: the invitation's SEQUENCE.
    pub booking_version: i32,
    pub recipient_name: &'a str,
    /// The invitation's attendee: the recipient's own address, never the other party's.
    pub recipient_email: &'a str,
    pub recipient_timezone: &'a str,
    /// True when the recipient is the instructor (wording differs).
    pub to_instructor: bool,
    pub other_party_name: &'a str,
    pub service_name: &'a str,
    pub duration_minutes: i32,
    pub price_cents: i64,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// For a reschedule: the time the lesson was moved from.
    pub previous_starts_at: Option<DateTime<Utc>>,
    pub cancellation_reason: Option<&'a str>,
    /// True when the lesson starts within the reminder lead: a confirmation or reschedule
    /// then has no separate reminder after it, and says so.
    pub starts_soon: bool,
    /// `MAIL_FROM`: the invitation's organizer, and the domain of its UID.
    pub mail_from: &'a str,
    /// `APP_URL`: where the "manage this lesson" link points.
    pub app_url: &'a str,
    /// When the email is rendered: the invitation's DTSTAMP.
    pub now: DateTime<Utc>,
}

/// The templates, parsed once per process.
static ENVIRONMENT: std::sync::LazyLock<Environment<'static>> =
    std::sync::LazyLock::new(environment);

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    for (name, source) in [
        ("base.html", include_str!("../../templates/base.html")),
        ("booking.html", include_str!("../../templates/booking.html")),
        ("booking.txt", include_str!("../../templates/booking.txt")),
        (
            "export_ready.html",
            include_str!("../../templates/export_ready.html"),
        ),
        (
            "export_ready.txt",
            include_str!("../../templates/export_ready.txt"),
        ),
    ] {
        // the templates are part of the binary; a syntax error is caught by the unit tests
        if let Err(e) = env.add_template(name, source) {
            tracing::error!(template = name, error = %e, "invalid email template");
        }
    }
    env
}

/// Formats `instant` as the recipient reads it, e.g. "Tuesday, March 10, 2026 at 2:00 PM EDT":
/// the one way every subject and body of every kind shows a time (the recipient's zone, with
/// its abbreviation).
pub fn local_time(instant: DateTime<Utc>, timezone: &str) -> String {
    let tz: Tz = timezone.parse().unwrap_or(chrono_tz::UTC);
    instant
        .with_timezone(&tz)
        .format("%A, %B %-d, %Y at %-I:%M %p %Z")
        .to_string()
}

/// Whether the email says that no separate reminder will follow: only a confirmation or a
/// reschedule (the emails after which a reminder would be scheduled) of a lesson that starts
/// within the reminder lead. Never a reminder (it is the reminder) nor a cancellation.
pub fn says_no_reminder_follows(view: &BookingEmailView<'_>) -> bool {
    view.starts_soon && matches!(view.kind, EmailKind::Confirmation | EmailKind::Reschedule)
}

/// `text` escaped for a double-quoted HTML attribute.
fn html_attribute(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Renders one booking email.
pub fn render_booking_email(
    view: &BookingEmailView<'_>,
) -> Result<RenderedEmail, minijinja::Error> {
    let when = local_time(view.starts_at, view.recipient_timezone);
    let subject = match view.kind {
        EmailKind::Confirmation => format!("Booking confirmed: {} on {when}", view.service_name),
        EmailKind::Cancellation => format!("Booking cancelled: {} on {when}", view.service_name),
        EmailKind::Reschedule => {
            format!("Booking rescheduled: {} now on {when}", view.service_name)
        }
        EmailKind::Reminder => format!("Reminder: {} on {when}", view.service_name),
    };
    let invitation = calendar::invitation(view);
    let ctx = context! {
        kind => view.kind.as_str(),
        recipient_name => view.recipient_name,
        to_instructor => view.to_instructor,
        other_party_name => view.other_party_name,
        service_name => view.service_name,
        duration_minutes => view.duration_minutes,
        price => format!("${}.{:02}", view.price_cents / 100, view.price_cents % 100),
        when => when,
        previous_when => view.previous_starts_at.map(|t| local_time(t, view.recipient_timezone)),
        cancellation_reason => view.cancellation_reason,
        no_reminder_follows => says_no_reminder_follows(view),
        manage_url => identity::manage_url(view.app_url, view.booking_id),
        // escaped here for an attribute, slashes kept: minijinja's escaping writes `/` as
        // `&#x2f;`, which every browser reads but no person can
        manage_href => Value::from_safe_string(html_attribute(&identity::manage_url(
            view.app_url,
            view.booking_id
        ))),
        invitation => invitation.as_ref().map(|i| i.method.as_str()),
        timezone => view.recipient_timezone,
    };
    let env = &*ENVIRONMENT;
    Ok(RenderedEmail {
        subject,
        html: env.get_template("booking.html")?.render(&ctx)?,
        text: env.get_template("booking.txt")?.render(&ctx)?,
        calendar: invitation,
    })
}

/// Everything the "your data export is ready" email shows.
#[derive(Debug, Clone)]
pub struct ExportReadyView<'a> {
    pub recipient_name: &'a str,
    pub recipient_timezone: &'a str,
    /// Where the document is downloaded (the API's download route).
    pub download_url: &'a str,
    pub expires_at: DateTime<Utc>,
}

/// Renders the "your data export is ready" email (HTML and text, no invitation).
pub fn render_export_ready(view: &ExportReadyView<'_>) -> Result<RenderedEmail, minijinja::Error> {
    let ctx = context! {
        recipient_name => view.recipient_name,
        download_url => view.download_url,
        download_href => Value::from_safe_string(html_attribute(view.download_url)),
        expires => local_time(view.expires_at, view.recipient_timezone),
        timezone => view.recipient_timezone,
    };
    let env = &*ENVIRONMENT;
    Ok(RenderedEmail {
        subject: "Your InstaInstru data export is ready".to_string(),
        html: env.get_template("export_ready.html")?.render(&ctx)?,
        text: env.get_template("export_ready.txt")?.render(&ctx)?,
        calendar: None,
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    const KINDS: [EmailKind; 4] = [
        EmailKind::Confirmation,
        EmailKind::Cancellation,
        EmailKind::Reschedule,
        EmailKind::Reminder,
    ];

    fn view(kind: EmailKind, timezone: &str) -> BookingEmailView<'_> {
        let starts_at = Utc
            .with_ymd_and_hms(2026, 3, 10, 18, 0, 0)
            .single()
            .expect("test value");
        BookingEmailView {
            kind,
            booking_id: 7,
            booking_version: 1,
            recipient_name: "Sam Student",
            recipient_email: "sam@example.com",
            recipient_timezone: timezone,
            to_instructor: false,
            other_party_name: "Ida Instructor",
            service_name: "Piano",
            duration_minutes: 60,
            price_cents: 6500,
            starts_at,
            ends_at: starts_at + chrono::Duration::minutes(60),
            previous_starts_at: None,
            cancellation_reason: None,
            starts_soon: false,
            mail_from: "InstaInstru <no-reply@instainstru.test>",
            app_url: "http://localhost:3000",
            now: starts_at - chrono::Duration::days(3),
        }
    }

    #[test]
    fn the_export_ready_email_has_both_parts_and_the_link() {
        let email = render_export_ready(&ExportReadyView {
            recipient_name: "Sam Student",
            recipient_timezone: "America/New_York",
            download_url: "http://localhost:8080/api/v1/privacy/exports/3/download",
            expires_at: Utc
                .with_ymd_and_hms(2026, 3, 10, 18, 0, 0)
                .single()
                .expect("test value"),
        })
        .expect("renders");
        assert!(email.html.contains("<html"));
        assert!(email.text.contains("/api/v1/privacy/exports/3/download"));
        assert!(email.html.contains("2:00 PM EDT"));
        assert!(email.calendar.is_none());
    }

    #[test]
    fn shows_the_time_in_the_recipients_zone() {
        let ny = render_booking_email(&view(EmailKind::Confirmation, "America/New_York"))
            .expect("test value");
        assert!(ny.text.contains("2:00 PM EDT"), "{}", ny.text);
        assert!(ny.html.contains("2:00 PM EDT"));
        let berlin = render_booking_email(&view(EmailKind::Confirmation, "Europe/Berlin"))
            .expect("test value");
        assert!(berlin.text.contains("7:00 PM CET"), "{}", berlin.text);
    }

    #[test]
    fn every_kind_shows_the_zone_abbreviation_in_subject_and_body() {
        for kind in KINDS {
            for (zone, shown) in [
                ("America/New_York", "2:00 PM EDT"),
                ("Asia/Kolkata", "11:30 PM IST"),
            ] {
                let email = render_booking_email(&view(kind, zone)).expect("test value");
                assert!(email.subject.contains(shown), "{kind:?}: {}", email.subject);
                assert!(email.text.contains(shown), "{kind:?}");
                assert!(email.html.contains(shown), "{kind:?}");
            }
        }
    }

    #[test]
    fn every_kind_renders_both_parts_and_the_manage_link() {
        for kind in KINDS {
            let mut v = view(kind, "America/New_York");
            v.previous_starts_at = Some(
                Utc.with_ymd_and_hms(2026, 3, 9, 18, 0, 0)
                    .single()
                    .expect("test value"),
            );
            v.cancellation_reason = Some("ill");
            let email = render_booking_email(&v).expect("test value");
            assert!(email.html.contains("<html"), "{kind:?}");
            assert!(email.text.contains("Piano"), "{kind:?}");
            assert!(!email.text.contains("<p>"), "{kind:?}");
            assert!(
                email.text.contains("http://localhost:3000/bookings/7"),
                "{kind:?}"
            );
            assert!(
                email
                    .html
                    .contains(r#"href="http://localhost:3000/bookings/7""#),
                "{kind:?}"
            );
        }
        let reminder = render_booking_email(&view(EmailKind::Reminder, "UTC")).expect("test value");
        assert!(reminder.subject.starts_with("Reminder:"));
    }

    #[test]
    fn the_manage_link_is_escaped_for_its_attribute() {
        let mut v = view(EmailKind::Confirmation, "UTC");
        v.app_url = "https://app.example.com/?a=1&b=\"<x>";
        let email = render_booking_email(&v).expect("test value");
        assert!(
            email.html.contains(
                r#"href="https://app.example.com/?a=1&amp;b=&quot;&lt;x&gt;/bookings/7""#
            ),
            "{}",
            email.html
        );
    }

    #[test]
    fn html_escapes_names() {
        let mut v = view(EmailKind::Confirmation, "UTC");
        v.other_party_name = "<script>x</script>";
        let email = render_booking_email(&v).expect("test value");
        assert!(!email.html.contains("<script>"));
    }

    #[test]
    fn only_a_confirmation_or_reschedule_of_a_soon_lesson_says_no_reminder_follows() {
        for kind in KINDS {
            for starts_soon in [false, true] {
                let mut v = view(kind, "UTC");
                v.starts_soon = starts_soon;
                let email = render_booking_email(&v).expect("test value");
                let expected =
                    starts_soon && matches!(kind, EmailKind::Confirmation | EmailKind::Reschedule);
                assert_eq!(
                    email.text.contains("no separate reminder"),
                    expected,
                    "{kind:?}, soon: {starts_soon}\n{}",
                    email.text
                );
                assert_eq!(
                    email.html.contains("no separate reminder"),
                    expected,
                    "{kind:?}, soon: {starts_soon}"
                );
            }
        }
    }

    #[test]
    fn reminders_carry_no_invitation_and_the_others_do() {
        for kind in KINDS {
            let email = render_booking_email(&view(kind, "UTC")).expect("test value");
            let method = email.calendar.map(|c| c.method);
            let expected = match kind {
                EmailKind::Confirmation | EmailKind::Reschedule => Some(calendar::Method::Request),
                EmailKind::Cancellation => Some(calendar::Method::Cancel),
                EmailKind::Reminder => None,
            };
            assert_eq!(method, expected, "{kind:?}");
        }
    }
}
