//! Demo data for local use, applied idempotently by `api seed` (and by `ops/run`).
use chrono::{Duration, NaiveTime};
use chrono_tz::Tz;
use sqlx::PgPool;

/// Days of availability the seed keeps ahead of today.
const DAYS: i64 = 30;

/// Creates the demo admin, student and instructor, the instructor's service and 30 days of
/// 08:00-20:00 New York availability. Running it again changes nothing but extends the days.
pub async fn seed(
    pool: &PgPool,
    today_utc: chrono::DateTime<chrono::Utc>,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for (email, name, role) in [
        ("admin@example.com", "Ada Admin", "admin"),
        ("student@example.com", "Sam Student", "student"),
        ("instructor@example.com", "Ida Instructor", "instructor"),
    ] {
        sqlx::query!(
            "insert into users (email, full_name, role, timezone) values ($1, $2, $3, 'America/New_York')
             on conflict (email) do nothing",
            email,
            name,
            role
        )
        .execute(&mut *tx)
        .await?;
    }
    let instructor: i64 =
        sqlx::query_scalar!("select id from users where email = 'instructor@example.com'")
            .fetch_one(&mut *tx)
            .await?;
    sqlx::query!(
        "insert into instructor_profiles (user_id, bio, min_advance_booking_hours) values ($1, 'Piano teacher', 2)
         on conflict (user_id) do nothing",
        instructor
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "insert into services (instructor_id, name, duration_minutes, price_cents) values ($1, 'Piano', 60, 6500)
         on conflict (instructor_id, name) do nothing",
        instructor
    )
    .execute(&mut *tx)
    .await?;
    let tz: Tz = chrono_tz::America::New_York;
    let today = today_utc.with_timezone(&tz).date_naive();
    let (open, close) = (
        NaiveTime::from_hms_opt(8, 0, 0),
        NaiveTime::from_hms_opt(20, 0, 0),
    );
    for offset in 0..=DAYS {
        sqlx::query!(
            "insert into availability (instructor_id, date, start_time, end_time) values ($1, $2, $3, $4)
             on conflict (instructor_id, date, start_time) do nothing",
            instructor,
            today + Duration::days(offset),
            open,
            close
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}
