//! Domain vocabulary: roles, booking states and the rows the platform reasons about.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a user is to the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Role {
    Student,
    Instructor,
    Admin,
    /// Sees the ops dashboard and its JSON twin.
    OpsViewer,
    /// Sees the ops dashboard and acts on it (retry, discard, pause, trigger).
    OpsOperator,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Student,
        Role::Instructor,
        Role::Admin,
        Role::OpsViewer,
        Role::OpsOperator,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Student => "student",
            Role::Instructor => "instructor",
            Role::Admin => "admin",
            Role::OpsViewer => "ops_viewer",
            Role::OpsOperator => "ops_operator",
        }
    }

    /// May read the ops views (the dashboard, `/api/v1/admin/` queues, jobs, schedules).
    pub fn can_view_ops(self) -> bool {
        matches!(self, Role::Admin | Role::OpsViewer | Role::OpsOperator)
    }

    /// May act on jobs, queues and schedules.
    pub fn can_act_ops(self) -> bool {
        matches!(self, Role::Admin | Role::OpsOperator)
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
                format!("unknown role {s:?}: one of {}", names.join(", "))
            })
    }
}

/// The life of a booking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum BookingStatus {
    Confirmed,
    Cancelled,
    Completed,
    NoShow,
}

/// A booking as stored, with the service snapshot taken when it was made.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
// inert for serializing; tells the OpenAPI document that an answer has no other fields
#[serde(deny_unknown_fields)]
pub struct Booking {
    pub id: i64,
    pub student_id: i64,
    pub instructor_id: i64,
    pub service_id: i64,
    #[serde(rename = "start")]
    pub starts_at: DateTime<Utc>,
    #[serde(rename = "end")]
    pub ends_at: DateTime<Utc>,
    pub status: BookingStatus,
    pub service_name: String,
    pub duration_minutes: i32,
    pub price_cents: i64,
    // always present, null when empty: required in the document (utoipa's default for an
    // `Option` is "may be absent")
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub notes: Option<String>,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub cancellation_reason: Option<String>,
    /// Incremented by every change.
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `sqlx::query_as!(Booking, $before + <every column of a booking> + $after, args…)`: the one
/// column list of every compile-time checked query that reads a whole [`Booking`]. For
/// crates that depend on `shared` (the status type is named by its path in the SQL).
#[macro_export]
macro_rules! query_booking {
    ($before:literal, $after:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            $crate::domain::Booking,
            $before
                + r#"id, student_id, instructor_id, service_id, starts_at, ends_at,
                     status as "status: shared::domain::BookingStatus", service_name,
                     duration_minutes, price_cents, notes, cancellation_reason, version,
                     created_at, updated_at"#
                + $after
            $(, $arg)*
        )
    };
}

/// A person as the email worker needs them; read at send time, never carried in a payload.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Recipient {
    pub id: i64,
    pub email: String,
    pub full_name: String,
    pub timezone: String,
    pub erased_at: Option<DateTime<Utc>>,
}
