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

-- The trim in PL/pgSQL, whose plans are kept for the session. Postgres 15 keeps no plan of a
-- SQL-language function's statements from one call to the next, so each batch of search
-- events planned this delete afresh: by pgbench from one client, prepared, a one-event call
-- of search_record_events took 2.16 ms with the SQL function and 1.28-1.46 ms with this one.
-- A batch at 5,000 events/s holds some 20 events, so that is 35 us of every event.
create or replace function search_history_trim(p_users bigint[], p_guests text[], p_kept int)
returns void
language plpgsql as $fn$
begin
    -- one index probe per searcher (a lateral subquery each), never a scan of everyone's
    -- history
    delete from search_history where id in (
        select old.id from (select distinct u from unnest(p_users) u where u is not null) u(id)
        cross join lateral (select s.id from search_history s where s.user_id = u.id
                            order by s.searched_at desc, s.id desc offset p_kept) old
        union all
        select old.id from (select distinct g from unnest(p_guests) g where g is not null) g(session)
        cross join lateral (select s.id from search_history s where s.guest_session = g.session
                            order by s.searched_at desc, s.id desc offset p_kept) old);
end
$fn$;
