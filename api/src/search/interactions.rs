//! What a searcher did with a search: clicks, hovers and conversions. Recorded against the
//! event (found by its id), counted for the day of the search; the event's `clicked` /
//! `converted` flag is set in the same transaction, which is what the rollup reads.
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::searcher::Searcher;

/// What kind of interaction.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, utoipa::ToSchema,
)]
#[schema(as = InteractionKind)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Click,
    Hover,
    Conversion,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Click => "click",
            Kind::Hover => "hover",
            Kind::Conversion => "conversion",
        }
    }
}

/// A stored search event, as much of it as interactions need.
#[derive(Debug, Clone)]
pub struct EventRef {
    pub id: i64,
    pub searched_at: DateTime<Utc>,
    user_id: Option<i64>,
    guest_session: Option<String>,
}

impl EventRef {
    pub fn made_by(&self, searcher: &Searcher) -> bool {
        searcher.owns(self.user_id, self.guest_session.as_deref())
    }
}

/// The event with this id. The id alone names no partition, so every month's primary key
/// index is probed once (about a dozen months are kept).
pub async fn find_event(conn: &mut PgConnection, id: i64) -> Result<Option<EventRef>, sqlx::Error> {
    sqlx::query_as!(
        EventRef,
        "select id, searched_at, user_id, guest_session from search_events where id = $1",
        id
    )
    .fetch_optional(conn)
    .await
}

/// One interaction to record.
#[derive(Debug, Clone, Copy)]
pub struct NewInteraction {
    pub kind: Kind,
    pub position: Option<i32>,
    pub instructor_id: Option<i64>,
    pub service_id: Option<i64>,
    pub booking_id: Option<i64>,
    pub occurred_at: DateTime<Utc>,
}

/// Records an interaction on `event`; returns its id and whether it is new. A conversion of
/// an event that already has one is not recorded again (the unique index decides, under any
/// concurrency): the existing conversion's id comes back with `false`.
#[tracing::instrument(level = "debug", skip_all, fields(event_id = event.id, kind = new.kind.as_str()))]
pub async fn record_interaction(
    conn: &mut PgConnection,
    event: &EventRef,
    new: &NewInteraction,
) -> Result<(i64, bool), sqlx::Error> {
    let inserted = sqlx::query_scalar!(
        r#"with inserted as (
             insert into search_interactions (event_id, searched_at, kind, position,
                                              instructor_id, service_id, booking_id, occurred_at)
             values ($1, $2, $3, $4, $5, $6, $7, $8)
             on conflict (event_id, searched_at) where kind = 'conversion' do nothing
             returning id
         ),
         flagged as (
             update search_events set clicked = clicked or $3 = 'click',
                                      converted = converted or $3 = 'conversion'
             where id = $1 and searched_at = $2 and exists (select 1 from inserted)
               and (($3 = 'click' and not clicked) or ($3 = 'conversion' and not converted))
         )
         select id as "id!" from inserted"#,
        event.id,
        event.searched_at,
        new.kind.as_str(),
        new.position,
        new.instructor_id,
        new.service_id,
        new.booking_id,
        new.occurred_at
    )
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(id) = inserted {
        metrics::counter!("search_interactions_total", "kind" => new.kind.as_str()).increment(1);
        return Ok((id, true));
    }
    let existing = sqlx::query_scalar!(
        "select id from search_interactions
         where event_id = $1 and searched_at = $2 and kind = 'conversion'",
        event.id,
        event.searched_at
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok((existing, false))
}

/// The search a booking of `student_id` says it came from: it must be that student's own
/// search (a 422 on `search_event_id` otherwise).
pub async fn find_for_booking(
    conn: &mut PgConnection,
    event_id: i64,
    student_id: i64,
) -> Result<EventRef, crate::error::ApiError> {
    find_event(conn, event_id)
        .await?
        .filter(|e| e.made_by(&Searcher::User(student_id)))
        .ok_or_else(|| {
            crate::error::ApiError::invalid(
                "unknown_search_event",
                "search_event_id",
                "no search of yours has this id",
            )
        })
}

/// Records the conversion of `event` by `booking`, in the booking's transaction. A search
/// that already converted keeps its first conversion (it counts once).
pub async fn record_for_booking(
    tx: &mut PgConnection,
    event: &EventRef,
    booking: &shared::domain::Booking,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    record_interaction(
        tx,
        event,
        &NewInteraction {
            kind: Kind::Conversion,
            position: None,
            instructor_id: Some(booking.instructor_id),
            service_id: Some(booking.service_id),
            booking_id: Some(booking.id),
            occurred_at: now,
        },
    )
    .await
    .map(|_| ())
}
