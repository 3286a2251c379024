//! Emails about a booking: confirmation, cancellation, reschedule and reminder, one job per
//! recipient.
use serde::{Deserialize, Serialize};

use super::JobArgs;

/// Which email about a booking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmailKind {
    Confirmation,
    Cancellation,
    Reschedule,
    Reminder,
}

impl EmailKind {
    pub const ALL: [EmailKind; 4] = [
        EmailKind::Confirmation,
        EmailKind::Cancellation,
        EmailKind::Reschedule,
        EmailKind::Reminder,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            EmailKind::Confirmation => "confirmation",
            EmailKind::Cancellation => "cancellation",
            EmailKind::Reschedule => "reschedule",
            EmailKind::Reminder => "reminder",
        }
    }
}

/// Which side of the booking receives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Party {
    Student,
    Instructor,
}

impl Party {
    pub const BOTH: [Party; 2] = [Party::Student, Party::Instructor];

    pub fn as_str(self) -> &'static str {
        match self {
            Party::Student => "student",
            Party::Instructor => "instructor",
        }
    }
}

/// "Send the `kind` email for booking `booking_id` (as of `booking_version`) to its `party`."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookingEmail {
    pub booking_id: i64,
    pub kind: EmailKind,
    pub party: Party,
    /// The booking version the email is about; a later change makes it stale.
    pub booking_version: i32,
}

impl JobArgs for BookingEmail {
    const QUEUE: &'static str = "booking_email";
    const METRIC_KINDS: &'static [&'static str] = &[
        EmailKind::ALL[0].as_str(),
        EmailKind::ALL[1].as_str(),
        EmailKind::ALL[2].as_str(),
        EmailKind::ALL[3].as_str(),
    ];

    fn dedupe_key(&self) -> String {
        format!(
            "booking_email:{}:{}:{}:v{}",
            self.booking_id,
            self.kind.as_str(),
            self.party.as_str(),
            self.booking_version
        )
    }

    /// Which email: its metrics (sent, skipped, failed) are per email kind.
    fn metric_kind(&self) -> &'static str {
        self.kind.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_email_kind_has_its_metric_series() {
        let kinds: Vec<&str> = EmailKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(BookingEmail::METRIC_KINDS, kinds.as_slice());
    }
}
