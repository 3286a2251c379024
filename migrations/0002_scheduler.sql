-- The scheduler: what each schedule is and how far it has been decided, the fire ledger,
-- and who holds the lease. The lease itself lives in Redis; this is what the admin
-- endpoint reads.

-- One row per schedule, published by the scheduler with the definition it runs (overrides
-- applied). `evaluated_to` is the instant up to which every slot has been decided: fired,
-- skipped by the catch-up policy, or reported as too old. The leader locks this row for the
-- transaction that fires, so two leaders take turns instead of racing.
create table schedule_state (
    schedule      text primary key,
    cron          text not null,
    timezone      text not null,
    catch_up      text not null check (catch_up in ('skip', 'once', 'all')),
    enabled       boolean not null,
    evaluated_to  timestamptz not null,
    updated_at    timestamptz not null
);

-- The fire ledger: one row per local slot that fired, written in the same transaction as
-- the job it enqueued. Unique on (schedule, local slot): a second fire of a slot, from two
-- leaders or a restart, inserts nothing and enqueues nothing.
create table schedule_fires (
    id          bigserial primary key,
    schedule    text not null,
    -- the wall-clock slot in the schedule's zone: the identity of the fire
    slot_local  timestamp not null,
    timezone    text not null,
    -- the instant it fired for (the DST rule applied)
    slot_at     timestamptz not null,
    -- the job it enqueued; its status is the fire's outcome. Purging old job records
    -- keeps the ledger row.
    job_id      bigint references jobs(id) on delete set null,
    fired_at    timestamptz not null,
    fired_by    text not null,
    -- set once when the job had not succeeded by the schedule's deadline (a counted miss)
    missed_at   timestamptz,
    unique (schedule, slot_local)
);
create index schedule_fires_latest_idx on schedule_fires (schedule, slot_at desc);
create index schedule_fires_job_idx on schedule_fires (job_id);

-- The scheduler instance that last held the lease, renewed on every tick.
create table scheduler_leader (
    id           boolean primary key default true check (id),
    holder       text not null,
    acquired_at  timestamptz not null,
    renewed_at   timestamptz not null,
    expires_at   timestamptz not null
);

-- Runs of a schedule are found by name for the dead man's switch (last success).
create index jobs_scheduled_run_idx on jobs ((payload->>'schedule'), finished_at)
    where queue = 'scheduled_run' and status = 'done';
