-- Every job's record is updated three times (relayed, started, finished). An update that
-- touches no indexed column is HOT (no new index entries), so "started" no longer changes
-- the status: a job is running when it is `enqueued` with `started_at` set. The status index
-- served only the admin counts, which scan; free space per page lets HOT updates stay on it.
drop index if exists jobs_status_idx;
alter table jobs set (fillfactor = 70);
alter table email_ledger set (fillfactor = 80);
