-- Job kinds as modules: one status vocabulary, typed periodic jobs, the queues the workers
-- registered, and the payload fields SQL filters on as columns.

-- Five statuses. "Running" is derived (enqueued with started_at set) so that starting an
-- attempt stays an update of unindexed columns (HOT, migration 0003); the stored 'running'
-- value was never written by that code and goes.
update jobs set status = 'enqueued' where status = 'running';
alter table jobs drop constraint if exists jobs_status_check;
alter table jobs add constraint jobs_status_check
    check (status in ('pending', 'enqueued', 'done', 'skipped', 'dead'));
drop index if exists jobs_enqueued_idx;
create index jobs_enqueued_idx on jobs (enqueued_at) where status = 'enqueued';
-- the dead letters, newest first, without scanning the finished history
create index jobs_dead_idx on jobs (id) where status = 'dead';

-- The booking a job is about, for cancel and reschedule (retire a booking's pending
-- reminders) and for ops filters: a column, not a payload->>'booking_id' scan of every
-- pending job. Generated, so records written before this migration have it too; a payload
-- whose booking_id is not an integer (a poison record) gets none rather than refusing the
-- insert.
alter table jobs add column booking_id bigint
    generated always as (case when payload->>'booking_id' ~ '^[0-9]{1,18}$'
                              then (payload->>'booking_id')::bigint end) stored;
create index jobs_booking_idx on jobs (booking_id) where booking_id is not null;

-- The schedule that started a job (a slot's fire or a manual trigger): the dead man's
-- switch reads a schedule's last success by it, whatever queue its kind travels on.
alter table jobs add column schedule text;
update jobs set schedule = payload->>'schedule' where queue = 'scheduled_run';
drop index if exists jobs_scheduled_run_idx;
create index jobs_schedule_done_idx on jobs (schedule, finished_at)
    where schedule is not null and status = 'done';

-- Periodic jobs are typed: each schedule enqueues its own kind on its own queue instead of
-- a `scheduled_run {schedule, slot}` dispatched by name. Records of the old shape move to
-- their kind with the arguments that kind takes; unfinished ones that Redis already held go
-- back to pending so the relay pushes them to their new queue (the stale copy in the old
-- queue has no consumer any more).
update jobs set queue = 'retention_sweep', payload = jsonb_build_object('slot', payload->'slot')
 where queue = 'scheduled_run' and payload->>'schedule' = 'retention_sweep';
-- the rollup is for the local day before its 02:00 New York slot
update jobs set queue = 'search_rollup',
       payload = jsonb_build_object('day',
           (((payload->>'slot')::timestamptz at time zone 'America/New_York')::date - 1))
 where queue = 'scheduled_run' and payload->>'schedule' = 'search_rollup';
update jobs set status = 'pending', started_at = null
 where queue in ('retention_sweep', 'search_rollup') and status = 'enqueued';
-- The reminder sweep only repeated the relay's own scan of due records: it is retired.
update jobs set status = 'skipped', finished_at = now(),
       last_error = 'reminder_sweep retired: the relay moves due records itself'
 where queue = 'scheduled_run' and payload->>'schedule' = 'reminder_sweep'
   and status in ('pending', 'enqueued');
delete from schedule_state where schedule = 'reminder_sweep';

-- The job kinds the running workers registered, published by each worker at start-up and
-- refreshed while it runs: the admin views list these queues, and the relay dead-letters a
-- record whose queue no live worker registered instead of pushing it where nobody consumes.
create table job_queues (
    queue          text primary key,
    concurrency    integer not null,
    max_attempts   integer not null,
    timeout_secs   integer not null,
    registered_by  text not null,
    seen_at        timestamptz not null
);
