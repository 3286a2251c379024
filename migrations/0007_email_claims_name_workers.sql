-- An email claim names the worker process that holds it, and every worker process says it
-- is alive: a claim whose worker is known dead (its heartbeat lapsed, or it stopped) is
-- taken over at once instead of after EMAIL_CLAIM_TIMEOUT_SECS, since waiting buys nothing
-- once the sender is gone: whether the server took the message is unknown either way.

-- One row per worker process (instance name, unique per start), heartbeating while it runs.
create table workers (
    id            text primary key,
    started_at    timestamptz not null,
    heartbeat_at  timestamptz not null,
    -- set on a clean stop, after its in-flight work drained
    stopped_at    timestamptz
);
create index workers_heartbeat_idx on workers (heartbeat_at);

-- The worker process whose delivery holds the claim; null for claims made before this
-- migration, which only time out.
alter table email_ledger add column claimed_by text;
