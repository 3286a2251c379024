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
