//! End-to-end tests of the platform against real Postgres, Redis and SMTP: one test binary.
mod at_rest;
mod bad_input;
mod booking_flow;
mod contract;
mod fuzz;
mod idempotency;
mod invitations;
mod observability;
mod ops_dashboard;
mod privacy;
mod rate_limit;
mod registry;
mod reminders;
mod search;
mod smtp_pool;
mod topologies;
mod upgrade;
