-- Reads of the backlog that do not grow with the history.
-- The backlog (the overview page, the queue gauges of every scrape) counts the pending and
-- the dead records per queue. With `queue` in their partial indexes those counts read the
-- index alone: ops/bench/ops, 1,000,000 records of which 10,000 dead, fetched every dead
-- and pending row's heap page for its queue before. The relay's claim (by run_at, filtered
-- by queue) and the dead-letter list (by id, filtered by queue) read the same two indexes
-- and now filter without the heap too.
drop index jobs_due_idx;
create index jobs_due_idx on jobs (run_at) include (queue) where status = 'pending';
drop index jobs_dead_idx;
create index jobs_dead_idx on jobs (id) include (queue) where status = 'dead';

-- The dead letters per queue, counted as records enter and leave that state. Ten thousand
-- dead letters still cost the backlog their ten thousand index entries on every overview
-- and scrape, here one row a queue (ops/bench/ops prints both plans). A record turns dead or leaves it only
-- on a failure's last attempt, a retry, a discard or the retention sweep: rare enough that
-- concurrent updates of one queue's row cost nothing measurable, and the WHEN clauses keep
-- every other transition of a job from calling the trigger at all.
create table job_dead_counts (
    queue text primary key,
    dead  bigint not null check (dead >= 0)
);
insert into job_dead_counts (queue, dead)
select queue, count(*) from jobs where status = 'dead' group by queue;

create function job_dead_counts_apply() returns trigger language plpgsql as $fn$
begin
    -- the row leaving first, so that a record moving queues never counts twice
    if tg_op in ('UPDATE', 'DELETE') and old.status = 'dead' then
        update job_dead_counts set dead = dead - 1 where queue = old.queue;
    end if;
    if tg_op in ('INSERT', 'UPDATE') and new.status = 'dead' then
        insert into job_dead_counts as c (queue, dead) values (new.queue, 1)
        on conflict (queue) do update set dead = c.dead + 1;
    end if;
    return null;
end
$fn$;

create trigger job_dead_counts_insert after insert on jobs
    for each row when (new.status = 'dead') execute function job_dead_counts_apply();
create trigger job_dead_counts_update after update of status, queue on jobs
    for each row when ((old.status = 'dead' or new.status = 'dead')
                       and (old.status, old.queue) is distinct from (new.status, new.queue))
    execute function job_dead_counts_apply();
create trigger job_dead_counts_delete after delete on jobs
    for each row when (old.status = 'dead') execute function job_dead_counts_apply();
