-- The batch write of search events does less for the common case: the events it created are
-- answered from what it wrote, and only the searchers that gained a history entry are trimmed.
--
-- Why: by instruction count (ops/bench/search-instructions: callgrind on a single-user
-- backend, the same 300 calls of ten events each on copies of one database with 50,000
-- users and their ten entries each, so the count repeats to within 0.03%), the call as
-- migration 0015 left it ran 1,968 million instructions and this one 1,904 million, 3% fewer
-- (results/search-instructions-2026-12-04T0510Z.txt). Most of it is the read-back: every
-- stored event was read back through a join of search_ids to the partitioned search_events,
-- each partition's index scan set up on every call; only the search_ids recorded before (a
-- retry, or another searcher's id, rare) are read back now. Skipping the trim of searchers
-- whose entries were only updated (they keep as many as before) saves in proportion to how
-- often a searcher repeats one of their ten recent queries.
--
-- Same arguments and answers as before: for every distinct search_id of the batch (of an
-- open account), its event, owner and whether this call created it; each closed account as
-- a row with a null search_id.
create or replace function search_record_events(
    p_stripe int, p_kept int, p_search_ids uuid[], p_searched_at timestamptz[], p_user_ids int8[],
    p_guests text[], p_queries text[], p_normalized text[], p_result_counts int4[],
    p_filters jsonb[], p_shown jsonb[], p_ip_hashes bytea[], p_ua_classes text[]
) returns table (search_id uuid, event_id bigint, created boolean, user_id bigint,
                 guest_session text)
language plpgsql
-- Generic plans for every statement of the call, the trigger's included. Left to itself, the
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
    perform set_config('search.stripe', p_stripe::text, true);
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
