-- The booking slice: people, what instructors offer, when they teach, bookings,
-- the durable records of asynchronous work (the outbox) and the email ledger.
create extension if not exists btree_gist;

create table users (
    id          bigserial primary key,
    email       text not null unique,
    full_name   text not null,
    role        text not null check (role in ('student', 'instructor', 'admin')),
    timezone    text not null default 'America/New_York',
    created_at  timestamptz not null default now(),
    erased_at   timestamptz
);

create table instructor_profiles (
    user_id                     bigint primary key references users(id),
    bio                         text not null default '',
    min_advance_booking_hours   integer not null default 2 check (min_advance_booking_hours >= 0)
);

create table services (
    id                bigserial primary key,
    instructor_id     bigint not null references instructor_profiles(user_id),
    name              text not null,
    duration_minutes  integer not null check (duration_minutes > 0 and duration_minutes <= 600),
    price_cents       bigint not null check (price_cents >= 0),
    is_active         boolean not null default true,
    unique (instructor_id, name)
);

-- Local wall-clock ranges in the instructor's timezone; instants are derived at query time
-- so that a range on a DST day still means what the instructor said.
create table availability (
    id             bigserial primary key,
    instructor_id  bigint not null references instructor_profiles(user_id),
    date           date not null,
    start_time     time not null,
    end_time       time not null,
    check (start_time < end_time),
    unique (instructor_id, date, start_time)
);

create table bookings (
    id                   bigserial primary key,
    student_id           bigint not null references users(id),
    instructor_id        bigint not null references instructor_profiles(user_id),
    service_id           bigint not null references services(id),
    starts_at            timestamptz not null,
    ends_at              timestamptz not null,
    status               text not null default 'confirmed'
                         check (status in ('confirmed', 'cancelled', 'completed', 'no_show')),
    service_name         text not null,
    duration_minutes     integer not null,
    price_cents          bigint not null,
    notes                text,
    cancellation_reason  text,
    -- bumped on every change the emails depend on (reschedule, cancel): the email ledger keys on it
    version              integer not null default 1,
    created_at           timestamptz not null default now(),
    updated_at           timestamptz not null default now(),
    check (starts_at < ends_at),
    -- the database, not the handler, is what stops two concurrent requests for one time
    constraint bookings_instructor_no_overlap exclude using gist
        (instructor_id with =, tstzrange(starts_at, ends_at) with &&) where (status = 'confirmed'),
    constraint bookings_student_no_overlap exclude using gist
        (student_id with =, tstzrange(starts_at, ends_at) with &&) where (status = 'confirmed')
);
create index bookings_student_idx on bookings (student_id, starts_at);
create index bookings_instructor_idx on bookings (instructor_id, starts_at);

-- The transactional outbox: every piece of asynchronous work that matters, written in the
-- same transaction as the change that caused it. The relay moves due rows to Redis.
create table jobs (
    id            bigserial primary key,
    queue         text not null,
    payload       jsonb not null,
    -- what the work is, so that a second enqueue of the same thing is a no-op
    dedupe_key    text not null unique,
    status        text not null default 'pending'
                  check (status in ('pending', 'enqueued', 'running', 'done', 'skipped', 'dead')),
    run_at        timestamptz not null default now(),
    attempts      integer not null default 0,
    max_attempts  integer not null default 8,
    -- how many times the relay has pushed it: part of the Redis task id, so a re-push
    -- after Redis lost its data is never swallowed by a stale id
    pushes        integer not null default 0,
    last_error    text,
    created_at    timestamptz not null default now(),
    enqueued_at   timestamptz,
    started_at    timestamptz,
    finished_at   timestamptz
);
create index jobs_due_idx on jobs (run_at) where status = 'pending';
create index jobs_enqueued_idx on jobs (enqueued_at) where status in ('enqueued', 'running');
create index jobs_status_idx on jobs (queue, status);

create table job_errors (
    id          bigserial primary key,
    job_id      bigint not null references jobs(id) on delete cascade,
    attempt     integer not null,
    error       text not null,
    at          timestamptz not null default now()
);
create index job_errors_job_idx on job_errors (job_id);

-- One row per email that exists in the world: claimed before the SMTP exchange,
-- marked sent after it, so retries and duplicate deliveries mail nothing more.
create table email_ledger (
    id              bigserial primary key,
    booking_id      bigint not null references bookings(id),
    kind            text not null,
    recipient_id    bigint not null references users(id),
    booking_version integer not null,
    status          text not null default 'sending' check (status in ('sending', 'sent')),
    message_id      text not null,
    claimed_at      timestamptz not null default now(),
    sent_at         timestamptz,
    unique (booking_id, kind, recipient_id, booking_version)
);

-- Where a rescheduled booking moved from, per version, for the reschedule email.
create table booking_moves (
    booking_id          bigint not null references bookings(id),
    version             integer not null,
    previous_starts_at  timestamptz not null,
    moved_at            timestamptz not null default now(),
    primary key (booking_id, version)
);
