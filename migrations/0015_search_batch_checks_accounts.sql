-- The batch write of search events checks its users' accounts itself, and the trim of a
-- searcher's history to its newest entries is one function, shared by the batch write and
-- the guest-history claim.
--
-- Why: the api looked up `users.erased_at` once per request before handing an event to its
-- batch. At 5,500 events/s offered that was 4,400 extra queries a second, and with them
-- in place the api recorded 4,324 events/s (p50 1,051 ms); skipping them gave 5,258/s (p50
-- 46 ms) on the same machine in the same hour (ops/bench/search, --connections 512).
--
-- Erasure (worker::jobs::erasure) takes its user FOR UPDATE first, deletes the user's
-- searches and sets erased_at. The batch takes its users FOR KEY SHARE, the lock the
-- foreign keys of its inserts take anyway, so the two serialize on the user's row: a batch
-- that commits first has its events deleted by the erasure; a batch that comes second
-- waits, re-reads the row, finds erased_at set and writes nothing of that user.

create function search_history_trim(p_users bigint[], p_guests text[], p_kept int)
returns void
language sql as $fn$
    -- one index probe per searcher (a lateral subquery each), never a scan of everyone's
    -- history
    delete from search_history where id in (
        select old.id from (select distinct u from unnest(p_users) u where u is not null) u(id)
        cross join lateral (select s.id from search_history s where s.user_id = u.id
                            order by s.searched_at desc, s.id desc offset p_kept) old
        union all
        select old.id from (select distinct g from unnest(p_guests) g where g is not null) g(session)
        cross join lateral (select s.id from search_history s where s.guest_session = g.session
                            order by s.searched_at desc, s.id desc offset p_kept) old)
$fn$;

drop function search_record_events(int, int, uuid[], timestamptz[], int8[], text[], text[],
                                   text[], int4[], jsonb[], jsonb[], bytea[], text[]);

-- One batch of search events, written by one call (migration 0013 says why). Arrays hold
-- one entry per event, in arrival order. A user whose account is closed (erased, or gone)
-- has nothing written; each such user is returned as a row with a null search_id. Exactly
-- once: a search_id is recorded by the first event carrying it (search_ids, inserted in
-- search_id order so that two batches never wait on each other in a cycle). History: the
-- fresh events' latest query per searcher and normalized query is upserted under the
-- searchers' advisory locks (taken in key order; the keys are those of
-- api::search::searcher::Searcher::lock_key), then each searcher's history is trimmed to its
-- `kept` most recent. Returns, for every distinct search_id of the batch, its stored event
-- and owner, and whether this call created it.
create function search_record_events(
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
    select (select coalesce(array_agg(n.search_id), '{}') from fresh n),
           array_agg(l.user_id), array_agg(l.guest_session), array_agg(l.normalized_query),
           array_agg(l.query), array_agg(l.searched_at)
      into fresh_ids, h_users, h_guests, h_normalized, h_queries, h_at
    from latest l;

    if cardinality(fresh_ids) > 0 then
        perform pg_advisory_xact_lock(hashtextextended(k.key, 0))
        from (select distinct coalesce('search_history:u:' || h.user_id,
                                       'search_history:g:' || h.guest_session) as key
              from unnest(h_users, h_guests) as h(user_id, guest_session) order by 1) k;
        insert into search_history as s (user_id, query, normalized_query, searched_at)
        select h.user_id, h.query, h.normalized_query, h.searched_at
        from unnest(h_users, h_queries, h_normalized, h_at)
             as h(user_id, query, normalized_query, searched_at)
        where h.user_id is not null
        order by h.user_id, h.normalized_query
        on conflict (user_id, normalized_query) where user_id is not null
        do update set query = excluded.query, searched_at = excluded.searched_at
        where excluded.searched_at >= s.searched_at;
        insert into search_history as s (guest_session, query, normalized_query, searched_at)
        select h.guest_session, h.query, h.normalized_query, h.searched_at
        from unnest(h_guests, h_queries, h_normalized, h_at)
             as h(guest_session, query, normalized_query, searched_at)
        where h.guest_session is not null
        order by h.guest_session, h.normalized_query
        on conflict (guest_session, normalized_query) where guest_session is not null
        do update set query = excluded.query, searched_at = excluded.searched_at
        where excluded.searched_at >= s.searched_at;
        perform search_history_trim(h_users, h_guests, p_kept);
    end if;

    return query
        select s.search_id, s.event_id, s.search_id = any(fresh_ids), e.user_id, e.guest_session
        from search_ids s
        join search_events e on e.id = s.event_id and e.searched_at = s.searched_at
        where s.search_id = any(p_search_ids)
        union all
        select null, null, false, c, null from unnest(closed) c;
end
$fn$;
