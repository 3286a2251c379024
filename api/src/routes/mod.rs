//! HTTP routes, one module per resource.
pub mod admin;
pub mod admin_analytics;
pub mod bookings;
pub mod docs;
pub mod health;
pub mod instructors;
pub mod openapi;
pub mod privacy;
pub mod search;
