-- The ops dashboard (issue 13): its roles, its sessions, the queue and schedule pauses it
-- sets, the manual fires it asks the scheduler for, and the indexes its pages read.

-- ops_viewer sees the dashboard, ops_operator also acts on it; admin is both.
alter table users drop constraint if exists users_role_check;
alter table users add constraint users_role_check
    check (role in ('student', 'instructor', 'admin', 'ops_viewer', 'ops_operator'));

-- A dashboard sign-in. The cookie holds a random token; only its SHA-256 is stored, so a
-- copy of this table signs nobody in. Deleted at logout; an expired row is ignored.
create table ops_sessions (
    token_hash  text primary key,
    user_id     bigint not null references users(id) on delete cascade,
    -- the form token every POST of this session carries
    csrf        text not null,
    created_at  timestamptz not null default now(),
    expires_at  timestamptz not null
);
create index ops_sessions_expires_idx on ops_sessions (expires_at);

-- A paused queue: the relay does not move its due records to Redis, the reconciler does
-- not re-push them and the workers do not fetch from it. In Postgres, so that it survives
-- a restart of every process; a row per paused queue, deleted on resume.
create table queue_pauses (
    queue      text primary key,
    -- the user id of the operator
    paused_by  text not null,
    paused_at  timestamptz not null default now()
);

-- A paused schedule: the leader fires none of its slots while it is paused (they pass, as
-- for a schedule switched off, so resuming fires no backlog). The scheduler's upsert of
-- its definitions never touches these columns.
alter table schedule_state add column paused_at timestamptz,
                           add column paused_by text;

-- "Trigger now" from the dashboard: the API cannot build a schedule's job (the schedules
-- are the scheduler's), so it records the request and the leading scheduler carries it
-- out with the same code as `scheduler trigger <name>`, filling in the job it enqueued.
create table schedule_triggers (
    id            bigserial primary key,
    schedule      text not null,
    requested_by  text not null,
    requested_at  timestamptz not null default now(),
    job_id        bigint references jobs(id) on delete set null,
    done_at       timestamptz,
    -- why it could not be carried out (an unknown schedule), when it could not
    error         text
);
create index schedule_triggers_open_idx on schedule_triggers (id) where done_at is null;

-- The overview's "succeeded / failed in the last hour and day" and the throughput chart:
-- a range of finished_at, read from the index alone (queue and status included).
create index jobs_finished_idx on jobs (finished_at) include (queue, status)
    where finished_at is not null;
-- Failed attempts (retried or not) in the last hour and day.
create index job_errors_at_idx on job_errors (at) include (job_id);
-- The audit log's ops entries, newest first, by keyset.
create index audit_log_ops_idx on audit_log (id) where action like 'ops.%';
