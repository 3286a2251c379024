-- The retention sweep's runs, so the admin view shows the last ones with their counts: one
-- row per sweep job (scheduled or asked for by an admin, a dry run or not), keyed by its job
-- so that a retried or redelivered job updates its own row instead of adding one.
create table retention_runs (
    id            bigserial primary key,
    job_id        bigint not null unique,
    -- 'schedule', or the id of the admin who asked
    requested_by  text not null,
    dry_run       boolean not null,
    state         text not null default 'pending'
                  check (state in ('pending', 'running', 'done', 'failed')),
    -- per data kind: rows deleted (or, for a dry run, that would be), and partitions dropped
    counts        jsonb not null default '{}',
    created_at    timestamptz not null default now(),
    started_at    timestamptz,
    finished_at   timestamptz
);
create index retention_runs_created_idx on retention_runs (created_at desc);

-- The interactions of an event, by the event's key: what the foreign key's ON DELETE
-- CASCADE (and the sweep's batches, and erasure) look up for every deleted event; without
-- it each deleted event scans its month's interactions.
create index search_interactions_event_idx on search_interactions (event_id, searched_at);
