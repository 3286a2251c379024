-- Each searcher's history in recency order, for the trim to the newest entries
-- (search_history_trim, migration 0015) and the history read.
--
-- Why: the trim found a searcher's rows through the unique index on (searcher, normalized
-- query) with a bitmap scan, then sorted them. Every new entry deletes the searcher's
-- oldest, so the index holds dead entries until a vacuum, and a bitmap scan visits the
-- heap page of every one of them (84 entries and 82 pages for 11 live rows per user on a
-- database with 935,000 dead rows), without marking them dead. An ordered scan of this
-- index reads the newest eleven and marks the dead entries it meets, so the next scan skips
-- them. By pgbench, two clients, 48-event calls of search_record_events on that database:
-- 85-90 calls/s without these indexes, 96-143/s with them.
create index search_history_user_recent on search_history (user_id, searched_at desc, id desc)
    where user_id is not null;
create index search_history_guest_recent on search_history (guest_session, searched_at desc, id desc)
    where guest_session is not null;
