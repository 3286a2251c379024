//! Renders booking emails from the templates in `shared/templates/`, with the lesson time in
//! the recipient's own time zone. Pure: no I/O beyond the embedded template files.
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use minijinja::{Environment, context};

use crate::jobs::EmailKind;

/// The subject, HTML part and plain-text part of one email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedEmail {
    pub subject: String,
    pub html: String,
    pub text: String,
}

/// Everything a booking email shows; assembled by the worker from current database state.
#[derive(Debug, Clone)]
pub struct BookingEmailView<'a> {
    pub kind: EmailKind,
    pub recipient_name: &'a str,
    pub recipient_timezone: &'a str,
    /// True when the recipient is the instructor (wording differs).
    pub to_instructor: bool,
    pub other_party_name: &'a str,
    pub service_name: &'a str,
    pub duration_minutes: i32,
    pub price_cents: i64,
    pub starts_at: DateTime<Utc>,
    /// For a reschedule: the time the lesson was moved from.
    pub previous_starts_at: Option<DateTime<Utc>>,
    pub cancellation_reason: Option<&'a str>,
    /// True when the lesson starts within the reminder lead: no separate reminder will follow.
    pub starts_soon: bool,
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
    ] {
        // the templates are part of the binary; a syntax error is caught by the unit tests
        if let Err(e) = env.add_template(name, source) {
            tracing::error!(template = name, error = %e, "invalid email template");
        }
    }
    env
}

/// Formats `instant` as the recipient reads it, e.g. "Tuesday, March 10, 2026 at 2:00 PM EDT".
pub fn local_time(instant: DateTime<Utc>, timezone: &str) -> String {
    let tz: Tz = timezone.parse().unwrap_or(chrono_tz::UTC);
    instant
        .with_timezone(&tz)
        .format("%A, %B %-d, %Y at %-I:%M %p %Z")
        .to_string()
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
        starts_soon => view.starts_soon,
        timezone => view.recipient_timezone,
    };
    let env = &*ENVIRONMENT;
    Ok(RenderedEmail {
        subject,
        html: env.get_template("booking.html")?.render(&ctx)?,
        text: env.get_template("booking.txt")?.render(&ctx)?,
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn view(kind: EmailKind, timezone: &str) -> BookingEmailView<'_> {
        BookingEmailView {
            kind,
            recipient_name: "Sam Student",
            recipient_timezone: timezone,
            to_instructor: false,
            other_party_name: "Ida Instructor",
            service_name: "Piano",
            duration_minutes: 60,
            price_cents: 6500,
            starts_at: Utc
                .with_ymd_and_hms(2026, 3, 10, 18, 0, 0)
                .single()
                .expect("test value"),
            previous_starts_at: None,
            cancellation_reason: None,
            starts_soon: false,
        }
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
    fn every_kind_renders_both_parts() {
        for kind in [
            EmailKind::Confirmation,
            EmailKind::Cancellation,
            EmailKind::Reschedule,
            EmailKind::Reminder,
        ] {
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
        }
        let reminder = render_booking_email(&view(EmailKind::Reminder, "UTC")).expect("test value");
        assert!(reminder.subject.starts_with("Reminder:"));
    }

    #[test]
    fn html_escapes_names() {
        let mut v = view(EmailKind::Confirmation, "UTC");
        v.other_party_name = "<script>x</script>";
        let email = render_booking_email(&v).expect("test value");
        assert!(!email.html.contains("<script>"));
    }

    #[test]
    fn soon_lessons_say_so() {
        let mut v = view(EmailKind::Confirmation, "UTC");
        v.starts_soon = true;
        let email = render_booking_email(&v).expect("test value");
        assert!(email.text.contains("starts soon"), "{}", email.text);
    }
}
