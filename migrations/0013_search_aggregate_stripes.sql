-- Striped query aggregates. Every search event adds one to its query's row of the day, and
-- the popular queries are in nearly every batch: concurrent writers waited on each other's
-- row locks until commit (pg_stat_activity during ops/bench/search at 5,000 events/s: two of
-- the four writers in Lock:transactionid at any moment, p99 158 ms), so commits went one at
-- a time. A query's day now has up to 16 rows, one per stripe; each writing transaction adds
-- to the stripe it names in the `search.stripe` setting (the API's writer tasks each own one),
-- else to the one its backend falls on. The numbers of a day are the sums over its stripes;
-- a stripe may go negative when an event added to one is deleted through another.
alter table search_day_queries add column stripe smallint not null default 0;
alter table search_day_queries drop constraint search_day_queries_pkey;
alter table search_day_queries
    add primary key (timezone, day, normalized_query, bot, stripe);

create or replace function search_events_aggregate() returns trigger language plpgsql as $fn$
declare
    zone text;
    writer_stripe smallint := (coalesce(nullif(current_setting('search.stripe', true), '')::int,
                                 pg_backend_pid()) % 16)::smallint;
    changes text := case tg_op
        when 'INSERT' then 'select 1 as sign, * from new_events'
        when 'DELETE' then 'select -1 as sign, * from old_events'
        else 'select 1 as sign, * from new_events union all select -1, * from old_events'
    end;
begin
    select timezone into zone from search_analytics_zone;
    if zone is null then
        return null;
    end if;
    -- the hot path, static so that its plans are cached for the session (the dynamic SQL
    -- below is planned on every statement: 0.65 ms of a 1.2 ms 20-event insert, by pgbench)
    if tg_op = 'INSERT' then
        insert into search_day_queries as d (timezone, day, normalized_query, bot, stripe,
                                            searches, zero, with_results, clicked, converted)
        select zone, c.day, c.normalized_query, c.bot, writer_stripe, count(*), sum(c.zero),
               sum(c.with_results), sum(c.clicked), sum(c.converted)
        from (select (n.searched_at at time zone zone)::date as day, n.normalized_query,
                     n.ua_class = 'bot' as bot, (n.result_count = 0)::int as zero,
                     (n.result_count > 0)::int as with_results,
                     (n.clicked and n.result_count > 0)::int as clicked,
                     n.converted::int as converted
              from new_events n) c
        group by c.day, c.normalized_query, c.bot
        order by c.day, c.normalized_query, c.bot
        on conflict (timezone, day, normalized_query, bot, stripe) do update set
            searches = d.searches + excluded.searches, zero = d.zero + excluded.zero,
            with_results = d.with_results + excluded.with_results,
            clicked = d.clicked + excluded.clicked, converted = d.converted + excluded.converted;
        insert into search_day_searchers as d (timezone, day, searcher, searches)
        select zone, c.day, c.searcher, count(*)
        from (select (n.searched_at at time zone zone)::date as day,
                     coalesce('u:' || n.user_id, 'g:' || n.guest_session) as searcher
              from new_events n where n.ua_class <> 'bot') c
        group by c.day, c.searcher
        order by c.day, c.searcher
        on conflict (timezone, day, searcher) do update set searches = d.searches + excluded.searches;
        return null;
    end if;
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
    $q$, changes) using zone, writer_stripe;
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
    $q$, changes) using zone;
    if tg_op <> 'INSERT' then
        -- a key whose stripes sum to zero in every count is gone from the day
        execute format($q$
            delete from search_day_queries d
            using (select q.day, q.normalized_query, q.bot
                   from search_day_queries q
                   join (select distinct (searched_at at time zone $1)::date as day,
                                normalized_query, ua_class = 'bot' as bot from old_events) k
                     on q.day = k.day and q.normalized_query = k.normalized_query and q.bot = k.bot
                   where q.timezone = $1
                   group by 1, 2, 3
                   having sum(q.searches) = 0 and sum(q.zero) = 0 and sum(q.with_results) = 0
                      and sum(q.clicked) = 0 and sum(q.converted) = 0) z
            where d.timezone = $1 and d.day = z.day and d.normalized_query = z.normalized_query
              and d.bot = z.bot
        $q$) using zone;
        execute format($q$
            delete from search_day_searchers d
            using (select distinct (searched_at at time zone $1)::date as day,
                          coalesce('u:' || user_id, 'g:' || guest_session) as searcher
                   from old_events) k
            where d.timezone = $1 and d.day = k.day and d.searcher = k.searcher and d.searches = 0
        $q$) using zone;
    end if;
    return null;
end
$fn$;

-- One batch of search events, written by one call: the API's writers sent eight statements
-- per batch (begin, stripe, events, locks, two history upserts, trim, commit), and on a busy
-- machine each round trip waits for the writer's turn on the API's runtime and for the
-- backend's on the CPU; at 5,500 events/s that was most of a request's 30 ms. Arrays hold one
-- entry per event, in arrival order. Exactly once: a search_id is recorded by the first event
-- carrying it (search_ids, inserted in search_id order so that two batches never wait on each
-- other in a cycle). History: the fresh events' latest query per searcher and normalized
-- query is upserted under the searchers' advisory locks (taken in key order; the keys are
-- those of api::search::searcher::Searcher::lock_key), then each searcher's history is trimmed
-- to its `kept` most recent. Returns, for every distinct search_id of the batch, its stored
-- event and owner, and whether this call created it.
create function search_record_events(
    p_stripe int, p_kept int, p_search_ids uuid[], p_searched_at timestamptz[], p_user_ids int8[],
    p_guests text[], p_queries text[], p_normalized text[], p_result_counts int4[],
    p_filters jsonb[], p_shown jsonb[], p_ip_hashes bytea[], p_ua_classes text[]
) returns table (search_id uuid, event_id bigint, created boolean, user_id bigint,
                 guest_session text)
language plpgsql as $fn$
#variable_conflict use_column
declare
    fresh_ids uuid[];
    h_users bigint[];
    h_guests text[];
    h_normalized text[];
    h_queries text[];
    h_at timestamptz[];
begin
    perform set_config('search.stripe', p_stripe::text, true);
    with input as (
        select * from unnest(p_search_ids, p_searched_at, p_user_ids, p_guests, p_queries,
                             p_normalized, p_result_counts, p_filters, p_shown, p_ip_hashes,
                             p_ua_classes)
            with ordinality as i(search_id, searched_at, user_id, guest_session, query,
                                 normalized_query, result_count, filters, shown, ip_hash,
                                 ua_class, ord)
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
    )
    select coalesce(array_agg(n.search_id), '{}') into fresh_ids from fresh n;

    if cardinality(fresh_ids) > 0 then
        -- the latest of the fresh events (each the first of its search_id) per searcher and
        -- normalized query; a tie in time goes to the later in the batch
        select array_agg(h.user_id), array_agg(h.guest_session), array_agg(h.normalized_query),
               array_agg(h.query), array_agg(h.searched_at)
          into h_users, h_guests, h_normalized, h_queries, h_at
        from (select distinct on (f.user_id, f.guest_session, f.normalized_query) f.*
              from (select distinct on (i.search_id) i.*
                    from unnest(p_search_ids, p_searched_at, p_user_ids, p_guests, p_queries,
                                p_normalized)
                         with ordinality as i(search_id, searched_at, user_id, guest_session,
                                              query, normalized_query, ord)
                    where i.search_id = any(fresh_ids)
                    order by i.search_id, i.ord) f
              order by f.user_id, f.guest_session, f.normalized_query, f.searched_at desc,
                       f.ord desc) h;
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
        delete from search_history where id in (
            select old.id from (select distinct u from unnest(h_users) u where u is not null) u(id)
            cross join lateral (select s.id from search_history s where s.user_id = u.id
                                order by s.searched_at desc, s.id desc offset p_kept) old
            union all
            select old.id from (select distinct g from unnest(h_guests) g where g is not null) g(session)
            cross join lateral (select s.id from search_history s
                                where s.guest_session = g.session
                                order by s.searched_at desc, s.id desc offset p_kept) old);
    end if;

    return query
        select s.search_id, s.event_id, s.search_id = any(fresh_ids), e.user_id, e.guest_session
        from search_ids s
        join search_events e on e.id = s.event_id and e.searched_at = s.searched_at
        where s.search_id = any(p_search_ids);
end
$fn$;
