//! Email: rendering from template files and sending through lettre.
pub mod render;
pub mod send;
pub mod smtp;

pub use render::{BookingEmailView, RenderedEmail, render_booking_email};
pub use send::{Mailer, SendError};
