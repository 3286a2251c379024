//! Reading a sent email back as its receiver does: its MIME structure, the calendar
//! invitation it carries (parsed with the `icalendar` crate), and a third-party check of that
//! invitation (Python's `icalendar` package, run on `tests/ics_validate.py`).
use chrono::{DateTime, Utc};
use icalendar::{CalendarDateTime, Component, DatePerhapsTime};
use mail_parser::{MessageParser, MimeHeaders, PartType};

/// The MIME tree of a raw message, one line per part, indented by depth: `type/subtype`, the
/// `method` of a calendar part, and the file name of an attachment.
pub fn structure(raw: &[u8]) -> Vec<String> {
    let message = MessageParser::default().parse(raw).expect("a MIME message");
    let mut lines = Vec::new();
    walk(&message, 0, 0, &mut lines);
    lines
}

fn walk(message: &mail_parser::Message<'_>, id: u32, depth: usize, lines: &mut Vec<String>) {
    let Some(part) = message.part(id) else {
        return;
    };
    let mut line = "  ".repeat(depth);
    match part.content_type() {
        Some(ct) => {
            line.push_str(&format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("")));
            if let Some(method) = ct.attribute("method") {
                line.push_str(&format!("; method={method}"));
            }
        }
        None => line.push_str("text/plain"),
    }
    if part
        .content_disposition()
        .is_some_and(|disposition| disposition.is_attachment())
    {
        line.push_str(&format!(
            " (attachment {})",
            part.attachment_name().unwrap_or("?")
        ));
    }
    lines.push(line);
    if let PartType::Multipart(children) = &part.body {
        for child in children {
            walk(message, *child, depth + 1, lines);
        }
    }
}

/// The calendar invitation of a message: the `text/calendar` alternative and the attached
/// `invite.ics`, decoded; `None` when the message has no calendar part.
#[derive(Debug, Clone)]
pub struct Invitation {
    /// The `method` parameter of the calendar part's Content-Type.
    pub content_method: String,
    /// The calendar part's text.
    pub ics: String,
    /// The attachment's text (the same, for clients that read only attachments).
    pub attachment: Option<String>,
}

pub fn invitation(raw: &[u8]) -> Option<Invitation> {
    let message = MessageParser::default().parse(raw).expect("a MIME message");
    let mut inline = None;
    let mut attachment = None;
    for part in &message.parts {
        let Some(ct) = part.content_type() else {
            continue;
        };
        let is_attachment = part
            .content_disposition()
            .is_some_and(|disposition| disposition.is_attachment());
        let text = String::from_utf8_lossy(part.contents()).into_owned();
        match (ct.ctype(), ct.subtype(), is_attachment) {
            ("text", Some("calendar"), false) => {
                inline = Some((ct.attribute("method").unwrap_or("").to_string(), text))
            }
            (_, _, true) if part.attachment_name() == Some("invite.ics") => attachment = Some(text),
            _ => {}
        }
    }
    inline.map(|(content_method, ics)| Invitation {
        content_method,
        ics,
        attachment,
    })
}

/// What a calendar does with an invitation: the facts of its one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFacts {
    pub method: String,
    pub uid: String,
    pub sequence: u32,
    pub status: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub summary: String,
    pub description: String,
    /// TRIGGER of each VALARM.
    pub alarms: Vec<String>,
}

/// Parses an invitation with the `icalendar` crate's parser.
pub fn event_facts(ics: &str) -> EventFacts {
    let calendar: icalendar::Calendar = ics.parse().expect("an iCalendar text");
    let events: Vec<_> = calendar.events().collect();
    assert_eq!(events.len(), 1, "one event per invitation:\n{ics}");
    let event = events[0];
    let utc = |value: Option<DatePerhapsTime>, what: &str| match value {
        Some(DatePerhapsTime::DateTime(CalendarDateTime::Utc(at))) => at,
        other => panic!("{what} is not a UTC date-time: {other:?}\n{ics}"),
    };
    EventFacts {
        method: calendar.property_value("METHOD").unwrap_or("").to_string(),
        uid: event.get_uid().unwrap_or("").to_string(),
        sequence: event.get_sequence().expect("a SEQUENCE"),
        status: event.property_value("STATUS").unwrap_or("").to_string(),
        starts_at: utc(event.get_start(), "DTSTART"),
        ends_at: utc(event.get_end(), "DTEND"),
        summary: event.get_summary().unwrap_or("").to_string(),
        description: event.get_description().unwrap_or("").to_string(),
        alarms: event
            .components()
            .iter()
            .filter(|c| c.component_kind() == "VALARM")
            .map(|alarm| alarm.property_value("TRIGGER").unwrap_or("").to_string())
            .collect(),
    }
}

/// Runs the third-party validator (`tests/ics_validate.py`, Python's `icalendar` package) on
/// each `(name, ics)`, and fails the test on any problem it reports. Without `python3` the
/// check is skipped, loudly; with Python but without the package it fails (ops/test installs
/// it: `pip install icalendar`).
pub fn validate_with_python(invitations: &[(&str, &str)]) {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    if std::process::Command::new(&python)
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "\n*** SKIPPED: the third-party iCalendar validation needs {python}, which is not \
             installed: the invitations were checked by the Rust parser only ***\n"
        );
        return;
    }
    let dir = std::env::temp_dir().join(shared::testing::unique_name("ics"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let files: Vec<_> = invitations
        .iter()
        .map(|(name, ics)| {
            let path = dir.join(format!("{name}.ics"));
            std::fs::write(&path, ics).expect("write .ics");
            path
        })
        .collect();
    let output = std::process::Command::new(&python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/ics_validate.py"))
        .args(&files)
        .output()
        .expect("run the validator");
    let _ = std::fs::remove_dir_all(&dir);
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the iCalendar validator (Python icalendar) refused the invitations (exit {:?}):\n{report}{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("{report}");
}
