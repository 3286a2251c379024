//! Email: rendering from template files, the calendar invitations the booking emails carry,
//! the names that identify them, the MIME message, and sending through lettre.
pub mod calendar;
pub mod identity;
pub mod message;
pub mod render;
pub mod send;
pub mod smtp;

pub use calendar::{Invitation, Method};
pub use identity::{event_uid, export_ready_message_id, manage_url, message_id};
/// The composed message, as [`compose`] builds it and [`Mailer::send`] takes it.
pub use lettre::Message;
pub use message::{ComposeError, compose};
pub use render::{
    BookingEmailView, ExportReadyView, RenderedEmail, render_booking_email, render_export_ready,
};
pub use send::{Mailer, SendError};
