//! Assembles a rendered email into the MIME message that is sent. Pure: no I/O.
//!
//! Without an invitation: `multipart/alternative` (text, HTML). With one, the structure that
//! Gmail, Outlook and Apple Mail show as an invitation (and that Google Calendar itself
//! sends):
//! ```text
//! multipart/mixed
//! ├── multipart/alternative
//! │   ├── text/plain
//! │   ├── text/html
//! │   └── text/calendar; method=REQUEST|CANCEL    (what a calendar-aware client acts on)
//! └── application/ics; name="invite.ics"          (the same text, for every other client)
//! ```
use lettre::{
    Message,
    message::{Attachment, Mailbox, MultiPart, SinglePart, header::ContentType},
};

use super::RenderedEmail;

/// The file name of the invitation attachment.
pub const INVITATION_FILE: &str = "invite.ics";

/// Why a message could not be assembled: never worth a retry.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("from address: {0}")]
    From(String),
    #[error("recipient address: {0}")]
    Recipient(String),
    #[error("building message: {0}")]
    Build(String),
}

/// One email to one recipient, with a stable `message_id` so a receiver can drop a resent
/// copy.
pub fn compose(
    from: &str,
    to_name: &str,
    to_address: &str,
    message_id: &str,
    email: &RenderedEmail,
) -> Result<Message, ComposeError> {
    let from: Mailbox = from
        .parse()
        .map_err(|e| ComposeError::From(format!("{e}")))?;
    let to = Mailbox::new(
        Some(to_name.to_string()),
        to_address
            .parse()
            .map_err(|e| ComposeError::Recipient(format!("{e}")))?,
    );
    let builder = Message::builder()
        .from(from)
        .to(to)
        .subject(email.subject.clone())
        .message_id(Some(message_id.to_string()));
    let text = SinglePart::plain(email.text.clone());
    let html = SinglePart::html(email.html.clone());
    let body = match &email.calendar {
        None => MultiPart::alternative().singlepart(text).singlepart(html),
        Some(invitation) => {
            let calendar_type = |mime: &str| {
                ContentType::parse(mime).map_err(|e| ComposeError::Build(format!("{mime}: {e}")))
            };
            let inline = SinglePart::builder()
                .content_type(calendar_type(&format!(
                    "text/calendar; charset=utf-8; method={}",
                    invitation.method.as_str()
                ))?)
                .body(invitation.ics.clone());
            let attachment = Attachment::new(INVITATION_FILE.to_string()).body(
                invitation.ics.clone(),
                calendar_type(&format!("application/ics; name=\"{INVITATION_FILE}\""))?,
            );
            MultiPart::mixed()
                .multipart(
                    MultiPart::alternative()
                        .singlepart(text)
                        .singlepart(html)
                        .singlepart(inline),
                )
                .singlepart(attachment)
        }
    };
    builder
        .multipart(body)
        .map_err(|e| ComposeError::Build(e.to_string()))
}
