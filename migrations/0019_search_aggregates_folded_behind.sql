-- The day aggregates of search events (migration 0011) are folded in behind the writes,
-- instead of by a trigger inside every writing transaction.
--
-- Why: the insert trigger was the largest part of the batch write after the history. By
-- instruction count (ops/bench/search-instructions: callgrind on a single-user backend, the
-- same 300 ten-event calls of search_record_events on copies of one database), the calls ran
-- 1,905 million instructions with it and 1,377 million without it (-27.7%); folding those
-- 3,000 events afterwards in one statement per table cost 390 million more. So the fold
-- is cheaper in all (it upserts each query and searcher once per fold, not once per batch,
-- and pays the trigger's set-up once), and it is no longer inside the transaction a request
-- waits for.
--
-- The invariant, restated: the aggregates hold exactly what a scan of the events with
-- id <= search_fold.folded_to computes, for the days the adopted zone covers. The rollup
-- folds before it reads (so its numbers never depend on the folder having run), and the
-- api folds every second while it records events (api::search::ingest), so a rollup finds
-- a second's worth of events to fold, not a day's.
--
-- What makes the watermark safe with commits out of order: every transaction that draws
-- event ids holds the advisory lock 'search_fold:inserts' shared from before it draws the
-- first until it ends. The fold takes that lock exclusively for a moment in a transaction
-- of its own and reads the sequence: every id drawn by then belongs to a transaction that
-- has ended, so no event at or below that bound can appear later. (The sequence caches no
-- values, set below: with a per-backend cache an id below last_value could be handed out
-- afterwards.) The moment lasts as long as the batches in flight (a few milliseconds at
-- 5,500 events/s); new batches queue behind it.
--
-- Updates (interaction flags) and deletes (erasure, retention) of events still adjust the
-- aggregates in their own transaction, for the events already folded only: an event above
-- the watermark is counted as it is when the fold reads it. Their trigger holds
-- 'search_fold:updates' shared, and a fold holds it exclusively from before it reads the
-- events until it commits, so a change is either seen by the fold's read or applied after
-- it against the new watermark (read committed: the trigger reads the watermark after its
-- lock is granted).

lock table search_events in share mode;

alter sequence search_events_id_seq cache 1;

create table search_fold (
    singleton boolean primary key default true check (singleton),
    -- every event with an id up to this one is in the aggregates
    folded_to bigint not null
);
-- until now the trigger folded every event as it was written, and the share lock above
-- lets no writer be in flight
insert into search_fold (folded_to)
select case when is_called then last_value else 0 end from search_events_id_seq;

drop trigger search_events_aggregate_insert on search_events;

-- Inserts that draw their ids from the column default take the writers' lock here, before
-- the first id is drawn; search_record_events draws its ids earlier (in its insert into
-- search_ids) and takes the lock itself first.
create function search_events_insert_lock() returns trigger language plpgsql as $fn$
begin
    perform pg_advisory_xact_lock_shared(hashtextextended('search_fold:inserts', 0));
    return null;
end
$fn$;
create trigger search_events_insert_lock before insert on search_events
    for each statement execute function search_events_insert_lock();

-- Folds the events written since the last fold into the aggregates of the adopted zone;
-- `folded` answers how many ids it covered (0: nothing new, or another fold had them).
-- A procedure, because the bound is read in a transaction of its own: the writers' lock is
-- held exclusively only while that transaction lasts. `lock_wait` bounds the wait for the
-- batches in flight (a folder that must not hold writers up gives up with
-- lock_not_available, 55P03); '0' waits as long as it takes.
create procedure search_fold(inout folded bigint default null, lock_wait text default '0')
language plpgsql as $fn$
declare
    zone text;
    from_id bigint;
    to_id bigint;
begin
    perform set_config('lock_timeout', lock_wait, true);
    perform pg_advisory_xact_lock(hashtextextended('search_fold:inserts', 0));
    select case when is_called then last_value else 0 end into to_id from search_events_id_seq;
    commit;
    -- one fold at a time: a second one waits here and then finds the first's watermark
    select folded_to into from_id from search_fold for update;
    if to_id <= from_id then
        folded := 0;
        commit;
        return;
    end if;
    perform pg_advisory_xact_lock(hashtextextended('search_fold:updates', 0));
    select timezone into zone from search_analytics_zone;
    if zone is not null then
        insert into search_day_queries as d (timezone, day, normalized_query, bot, stripe,
                                            searches, zero, with_results, clicked, converted)
        select zone, c.day, c.normalized_query, c.bot, 0, count(*), sum(c.zero),
               sum(c.with_results), sum(c.clicked), sum(c.converted)
        from (select (e.searched_at at time zone zone)::date as day, e.normalized_query,
                     e.ua_class = 'bot' as bot, (e.result_count = 0)::int as zero,
                     (e.result_count > 0)::int as with_results,
                     (e.clicked and e.result_count > 0)::int as clicked,
                     e.converted::int as converted
              from search_events e where e.id > from_id and e.id <= to_id) c
        group by c.day, c.normalized_query, c.bot
        order by c.day, c.normalized_query, c.bot
        on conflict (timezone, day, normalized_query, bot, stripe) do update set
            searches = d.searches + excluded.searches, zero = d.zero + excluded.zero,
            with_results = d.with_results + excluded.with_results,
            clicked = d.clicked + excluded.clicked, converted = d.converted + excluded.converted;
        insert into search_day_searchers as d (timezone, day, searcher, searches)
        select zone, c.day, c.searcher, count(*)
        from (select (e.searched_at at time zone zone)::date as day,
                     coalesce('u:' || e.user_id, 'g:' || e.guest_session) as searcher
              from search_events e
              where e.id > from_id and e.id <= to_id and e.ua_class <> 'bot') c
        group by c.day, c.searcher
        order by c.day, c.searcher
        on conflict (timezone, day, searcher) do update set searches = d.searches + excluded.searches;
    end if;
    update search_fold set folded_to = to_id;
    folded := to_id - from_id;
    commit;
end
$fn$;

-- The trigger of updates and deletes, for the folded events only (above). Rows are
-- upserted in key order, so that two concurrent writers never wait on each other in a
-- cycle; keys whose counts cancel out are skipped, and keys left at zero are deleted.
create or replace function search_events_aggregate() returns trigger language plpgsql as $fn$
declare
    zone text;
    folded bigint;
    writer_stripe smallint := (pg_backend_pid() % 16)::smallint;
    changes text := case tg_op
        when 'DELETE' then 'select -1 as sign, * from old_events where id <= $3'
        else 'select 1 as sign, * from new_events where id <= $3
              union all select -1, * from old_events where id <= $3'
    end;
begin
    select timezone into zone from search_analytics_zone;
    if zone is null then
        return null;
    end if;
    perform pg_advisory_xact_lock_shared(hashtextextended('search_fold:updates', 0));
    select folded_to into folded from search_fold;
    execute format($q$
        insert into search_day_queries as d (timezone, day, normalized_query, bot, stripe,
                                            searches, zero, with_results, clicked, converted)
        select $1, day, normalized_query, bot, $2, sum(sign), sum(sign * zero),
               sum(sign * with_results), sum(sign * clicked), sum(sign * converted)
        from (select sign, (searched_at at time zone $1)::date as day, normalized_query,
                     ua_class = 'bot' as bot, (result_count = 0)::int as zero,
                     (result_count > 0)::int as with_results,
                     (clicked and result_count > 0)::int as clicked, converted::int as converted
              from (%s) c) c
        group by day, normalized_query, bot
        having sum(sign) <> 0 or sum(sign * zero) <> 0 or sum(sign * with_results) <> 0
            or sum(sign * clicked) <> 0 or sum(sign * converted) <> 0
        order by day, normalized_query, bot
        on conflict (timezone, day, normalized_query, bot, stripe) do update set
            searches = d.searches + excluded.searches, zero = d.zero + excluded.zero,
            with_results = d.with_results + excluded.with_results,
            clicked = d.clicked + excluded.clicked, converted = d.converted + excluded.converted
    $q$, changes) using zone, writer_stripe, folded;
    execute format($q$
        insert into search_day_searchers as d (timezone, day, searcher, searches)
        select $1, (searched_at at time zone $1)::date as day,
               coalesce('u:' || user_id, 'g:' || guest_session) as searcher, sum(sign)
        from (%s) c
        where ua_class <> 'bot'
        group by 2, 3
        having sum(sign) <> 0
        order by 2, 3
        on conflict (timezone, day, searcher) do update set searches = d.searches + excluded.searches
    $q$, changes) using zone, writer_stripe, folded;
    -- a key whose stripes sum to zero in every count is gone from the day
    delete from search_day_queries d
    using (select q.day, q.normalized_query, q.bot
           from search_day_queries q
           join (select distinct (o.searched_at at time zone zone)::date as day,
                        o.normalized_query, o.ua_class = 'bot' as bot
                 from old_events o where o.id <= folded) k
             on q.day = k.day and q.normalized_query = k.normalized_query and q.bot = k.bot
           where q.timezone = zone
           group by 1, 2, 3
           having sum(q.searches) = 0 and sum(q.zero) = 0 and sum(q.with_results) = 0
              and sum(q.clicked) = 0 and sum(q.converted) = 0) z
    where d.timezone = zone and d.day = z.day and d.normalized_query = z.normalized_query
      and d.bot = z.bot;
    delete from search_day_searchers d
    using (select distinct (o.searched_at at time zone zone)::date as day,
                  coalesce('u:' || o.user_id, 'g:' || o.guest_session) as searcher
           from old_events o where o.id <= folded) k
    where d.timezone = zone and d.day = k.day and d.searcher = k.searcher and d.searches = 0;
    return null;
end
$fn$;

-- Adopting a zone empties the aggregates and starts them at the next local day, as before;
-- the events written so far are then counted as folded (the days they are in are rolled up
-- from the events).
create or replace function search_analytics_adopt_zone(zone text) returns date language plpgsql as $fn$
declare
    current search_analytics_zone;
    newest timestamptz;
begin
    select * into current from search_analytics_zone;
    if current.timezone = zone then
        return current.covers_from;
    end if;
    perform 1 from search_fold for update;
    lock table search_events in share mode;
    select * into current from search_analytics_zone for update;
    if current.timezone = zone then
        return current.covers_from;
    end if;
    delete from search_day_queries;
    delete from search_day_searchers;
    -- search_ids holds every event's time, unpartitioned and narrow
    select max(searched_at) into newest from search_ids;
    insert into search_analytics_zone (timezone, covers_from)
    values (zone, coalesce((newest at time zone zone)::date + 1, '-infinity'::date))
    on conflict (singleton) do update set timezone = excluded.timezone,
                                          covers_from = excluded.covers_from;
    update search_fold set folded_to = (select case when is_called then last_value else 0 end
                                        from search_events_id_seq);
    return (select covers_from from search_analytics_zone);
end
$fn$;

-- The batch write (as migration 0018 left it) takes the writers' lock, and no longer names
-- a stripe: it writes no aggregate.
drop function search_record_events(int, int, uuid[], timestamptz[], int8[], text[], text[],
                                   text[], int4[], jsonb[], jsonb[], bytea[], text[]);
create function search_record_events(
    p_kept int, p_search_ids uuid[], p_searched_at timestamptz[], p_user_ids int8[],
    p_guests text[], p_queries text[], p_normalized text[], p_result_counts int4[],
    p_filters jsonb[], p_shown jsonb[], p_ip_hashes bytea[], p_ua_classes text[]
) returns table (search_id uuid, event_id bigint, created boolean, user_id bigint,
                 guest_session text)
language plpgsql
-- Generic plans for every statement of the call, the guard trigger's included. Left to itself, the
-- plan cache kept planning these statements afresh on every call (their arrays make each
-- custom plan look cheaper than the generic one), and planning cost more than running: by
-- pgbench from one client, a one-event call took 3.1 ms and a 128-event call 21.4 ms under
-- plan_cache_mode = auto, 2.1 ms and 14.7 ms under force_generic_plan.
set plan_cache_mode = force_generic_plan
as $fn$
#variable_conflict use_column
declare
    closed bigint[];
    fresh_ids uuid[];
    fresh_events bigint[];
    fresh_users bigint[];
    fresh_guests text[];
    distinct_ids bigint;
    trimmed_users bigint[];
    trimmed_guests text[];
    h_users bigint[];
    h_guests text[];
    h_normalized text[];
    h_queries text[];
    h_at timestamptz[];
begin
    -- before the first event id is drawn, until the end of the transaction (search_fold)
    perform pg_advisory_xact_lock_shared(hashtextextended('search_fold:inserts', 0));
    -- locked in id order, so that two batches never wait on each other in a cycle
    select coalesce(array_agg(b.id) filter (where a.id is null), '{}') into closed
    from (select distinct x from unnest(p_user_ids) x where x is not null) b(id)
    left join (select u.id from users u
               where u.id = any(p_user_ids) and u.erased_at is null
               order by u.id
               for key share of u) a on a.id = b.id;

    with input as (
        select * from unnest(p_search_ids, p_searched_at, p_user_ids, p_guests, p_queries,
                             p_normalized, p_result_counts, p_filters, p_shown, p_ip_hashes,
                             p_ua_classes)
            with ordinality as i(search_id, searched_at, user_id, guest_session, query,
                                 normalized_query, result_count, filters, shown, ip_hash,
                                 ua_class, ord)
        where i.user_id is null or i.user_id <> all(closed)
    ),
    firsts as (
        select distinct on (i.search_id) * from input i order by i.search_id, i.ord
    ),
    fresh as (
        insert into search_ids as s (search_id, event_id, searched_at)
        select f.search_id, nextval('search_events_id_seq'), f.searched_at
        from firsts f order by f.search_id
        on conflict (search_id) do nothing
        returning s.search_id, s.event_id
    ),
    events as (
        insert into search_events (id, search_id, searched_at, user_id, guest_session, query,
                                   normalized_query, result_count, filters, shown, ip_hash,
                                   ua_class)
        select n.event_id, f.search_id, f.searched_at, f.user_id, f.guest_session, f.query,
               f.normalized_query, f.result_count, f.filters, f.shown, f.ip_hash, f.ua_class
        from fresh n join firsts f on f.search_id = n.search_id
    ),
    -- the latest of the fresh events per searcher and normalized query; a tie in time goes
    -- to the later in the batch
    latest as (
        select distinct on (f.user_id, f.guest_session, f.normalized_query) f.*
        from fresh n join firsts f on f.search_id = n.search_id
        order by f.user_id, f.guest_session, f.normalized_query, f.searched_at desc, f.ord desc
    )
    select fr.ids, fr.events, fr.users, fr.guests, (select count(*) from firsts),
           h.users, h.guests, h.normalized, h.queries, h.at
      into fresh_ids, fresh_events, fresh_users, fresh_guests, distinct_ids,
           h_users, h_guests, h_normalized, h_queries, h_at
    from (select coalesce(array_agg(f.search_id), '{}') as ids, array_agg(n.event_id) as events,
                 array_agg(f.user_id) as users, array_agg(f.guest_session) as guests
          from fresh n join firsts f on f.search_id = n.search_id) fr,
         (select array_agg(l.user_id) as users, array_agg(l.guest_session) as guests,
                 array_agg(l.normalized_query) as normalized, array_agg(l.query) as queries,
                 array_agg(l.searched_at) as at
          from latest l) h;

    if cardinality(fresh_ids) > 0 then
        perform pg_advisory_xact_lock(hashtextextended(k.key, 0))
        from (select distinct coalesce('search_history:u:' || h.user_id,
                                       'search_history:g:' || h.guest_session) as key
              from unnest(h_users, h_guests) as h(user_id, guest_session) order by 1) k;
        -- a searcher whose entries were only updated has no more than before, so only those
        -- with a new entry are trimmed (xmax is 0 only on a row the upsert inserted: an updated
        -- row carries the lock the upsert took on it)
        with upserted as (
            insert into search_history as s (user_id, query, normalized_query, searched_at)
            select h.user_id, h.query, h.normalized_query, h.searched_at
            from unnest(h_users, h_queries, h_normalized, h_at)
                 as h(user_id, query, normalized_query, searched_at)
            where h.user_id is not null
            order by h.user_id, h.normalized_query
            on conflict (user_id, normalized_query) where user_id is not null
            do update set query = excluded.query, searched_at = excluded.searched_at
            where excluded.searched_at >= s.searched_at
            returning s.user_id, s.xmax = 0 as inserted
        )
        select coalesce(array_agg(distinct u.user_id) filter (where u.inserted), '{}')
          into trimmed_users from upserted u;
        with upserted as (
            insert into search_history as s (guest_session, query, normalized_query, searched_at)
            select h.guest_session, h.query, h.normalized_query, h.searched_at
            from unnest(h_guests, h_queries, h_normalized, h_at)
                 as h(guest_session, query, normalized_query, searched_at)
            where h.guest_session is not null
            order by h.guest_session, h.normalized_query
            on conflict (guest_session, normalized_query) where guest_session is not null
            do update set query = excluded.query, searched_at = excluded.searched_at
            where excluded.searched_at >= s.searched_at
            returning s.guest_session, s.xmax = 0 as inserted
        )
        select coalesce(array_agg(distinct g.guest_session) filter (where g.inserted), '{}')
          into trimmed_guests from upserted g;
        if cardinality(trimmed_users) > 0 or cardinality(trimmed_guests) > 0 then
            perform search_history_trim(trimmed_users, trimmed_guests, p_kept);
        end if;
    end if;

    return query
        select f.search_id, f.event_id, true, f.user_id, f.guest_session
        from unnest(fresh_ids, fresh_events, fresh_users, fresh_guests)
             as f(search_id, event_id, user_id, guest_session);
    -- the search_ids that were recorded before, by this searcher or another
    if cardinality(fresh_ids) < distinct_ids then
        return query
            select s.search_id, s.event_id, false, e.user_id, e.guest_session
            from search_ids s
            join search_events e on e.id = s.event_id and e.searched_at = s.searched_at
            where s.search_id = any(p_search_ids) and s.search_id <> all(fresh_ids);
    end if;
    if cardinality(closed) > 0 then
        return query select null::uuid, null::bigint, false, c, null::text from unnest(closed) c;
    end if;
end
$fn$;
