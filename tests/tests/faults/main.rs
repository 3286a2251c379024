//! Faults: the built binaries against real Postgres, Redis and an SMTP sink, under the
//! failures a job platform meets in production. Each scenario counts what went in and what
//! came out, and adds its line to the suite summary that `ops/test` prints.
mod in_process;
mod processes;
mod topologies;

use std::collections::HashMap;

use e2e::smtp::SmtpSink;
use shared::jobs::{BookingEmail, EmailKind, Party};

/// The Message-ID of the confirmation of booking `id` to `party`, as the worker names it
/// (the binaries run with the default `MAIL_FROM`).
pub fn confirmation_id(id: i64, party: Party) -> String {
    let from = shared::config::Config::from_vars(Vec::new())
        .expect("default configuration")
        .mail_from;
    let email = BookingEmail {
        booking_id: id,
        kind: EmailKind::Confirmation,
        party,
        booking_version: 1,
    };
    shared::email::message_id(&email, &from)
}

/// What the sink holds of the confirmations of `bookings`:
/// (distinct effects out, lost, extra SMTP transmissions of an effect already delivered).
pub fn tally(smtp: &SmtpSink, bookings: &[i64]) -> (usize, usize, usize) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for message in smtp.messages() {
        *seen.entry(message.message_id()).or_default() += 1;
    }
    let expected: Vec<String> = bookings
        .iter()
        .flat_map(|id| {
            [
                confirmation_id(*id, Party::Student),
                confirmation_id(*id, Party::Instructor),
            ]
        })
        .collect();
    let out = expected.iter().filter(|id| seen.contains_key(*id)).count();
    let extra = expected
        .iter()
        .map(|id| seen.get(id).copied().unwrap_or(0).saturating_sub(1))
        .sum();
    (out, expected.len() - out, extra)
}
