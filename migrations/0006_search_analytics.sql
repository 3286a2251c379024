-- Search analytics: every search (search_events) and what the searcher did with it
-- (search_interactions), each searcher's recent searches (search_history), and the nightly
-- numbers per local day (search_rollups).
--
-- Events and interactions are partitioned by month (declarative range partitioning on the
-- *search's* time, in UTC months), so that a day's rollup reads one or two partitions and the
-- retention sweep drops whole expired months instead of deleting millions of rows.
-- `search_ensure_partitions` creates the months; this migration creates the previous month
-- through a year ahead, and the worker keeps creating them (shared::search::ensure_partitions,
-- called at start-up and by every rollup run). There is no default partition on purpose: rows
-- parked in one would have to be moved before their month's partition could be created.

create sequence search_events_id_seq as bigint;

create table search_events (
    id                bigint not null default nextval('search_events_id_seq'),
    -- the client's id of this search (or one the API made): see search_ids
    search_id         uuid not null,
    searched_at       timestamptz not null,
    -- the searcher: a user, or an opaque guest session id (at most 64 characters)
    user_id           bigint references users(id),
    guest_session     text check (length(guest_session) between 1 and 64),
    query             text not null check (length(query) between 1 and 200),
    normalized_query  text not null check (length(normalized_query) >= 1),
    result_count      integer not null check (result_count >= 0),
    filters           jsonb check (filters is null or jsonb_typeof(filters) = 'object'),
    -- the results the client showed: [{"instructor_id", "service_id"?, "position"}]
    shown             jsonb check (shown is null or jsonb_typeof(shown) = 'array'),
    -- HMAC-SHA256 of the client address under SEARCH_IP_HASH_KEY; the address itself is
    -- never stored
    ip_hash           bytea check (ip_hash is null or length(ip_hash) = 32),
    ua_class          text not null check (ua_class in ('desktop', 'mobile', 'tablet', 'bot')),
    -- Whether the search has a click / a conversion among its interactions, set in the
    -- interaction's transaction. search_interactions is the record; these two flags let the
    -- rollup read one table in one pass instead of joining a second one (issue 11: rollup
    -- within 3x a bare scan of the day).
    clicked           boolean not null default false,
    converted         boolean not null default false,
    check ((user_id is null) <> (guest_session is null)),
    -- a unique key of a partitioned table must contain the partition key
    primary key (id, searched_at)
) partition by range (searched_at);
alter sequence search_events_id_seq owned by search_events.id;

-- The identity of every search, one row per search_id, in a table that is *not*
-- partitioned. Why: a unique index on search_events must include searched_at, and a client
-- that retries after a timeout sends the same search_id at a later instant, possibly in
-- another month's partition, so (search_id, searched_at) would not stop the second copy.
-- Inserting here first (on conflict do nothing) is what records a search exactly once,
-- whenever the retry arrives. It also tells where the event lives (event_id, searched_at).
-- Rows are deleted with their events by retention (by searched_at, in batches: the BRIN
-- index is enough because rows arrive in time order).
create table search_ids (
    search_id    uuid primary key,
    event_id     bigint not null,
    searched_at  timestamptz not null
);
create index search_ids_searched_at_brin on search_ids using brin (searched_at);

create sequence search_interactions_id_seq as bigint;

-- What a searcher did with a search. Partitioned by the *search's* time (searched_at is
-- copied from the event), because an interaction counts for the day of its search whenever
-- it arrives: a day's rollup and a month's expiry then touch the same partitions of both
-- tables.
create table search_interactions (
    id             bigint not null default nextval('search_interactions_id_seq'),
    event_id       bigint not null,
    searched_at    timestamptz not null,
    kind           text not null check (kind in ('click', 'hover', 'conversion')),
    position       integer check (position >= 0),
    -- what the client says was clicked; no foreign keys: analytics describe what a client
    -- showed, and a catalog change must not be blocked by, nor break, last year's clicks
    instructor_id  bigint,
    service_id     bigint,
    -- set for the conversion recorded by POST /api/v1/bookings
    booking_id     bigint references bookings(id),
    occurred_at    timestamptz not null,
    primary key (id, searched_at),
    foreign key (event_id, searched_at) references search_events (id, searched_at) on delete cascade
) partition by range (searched_at);
alter sequence search_interactions_id_seq owned by search_interactions.id;
-- a repeated conversion of one search counts once, under any concurrency
create unique index search_interactions_one_conversion
    on search_interactions (event_id, searched_at) where kind = 'conversion';

-- Each searcher's most recent distinct searches (at most 10 are kept), keyed by the
-- normalized query; `query` is the text as last typed. The partial unique indexes are the
-- conflict targets of the upsert, so concurrent identical searches make one row.
create table search_history (
    id                bigserial primary key,
    user_id           bigint references users(id),
    guest_session     text check (length(guest_session) between 1 and 64),
    query             text not null,
    normalized_query  text not null,
    searched_at       timestamptz not null,
    check ((user_id is null) <> (guest_session is null))
);
create unique index search_history_user_query
    on search_history (user_id, normalized_query) where user_id is not null;
create unique index search_history_guest_query
    on search_history (guest_session, normalized_query) where guest_session is not null;
-- guest history expires after 30 days (the retention sweep)
create index search_history_guest_age on search_history (searched_at) where guest_session is not null;

-- The numbers of one local day (worker/src/jobs/search_rollup.rs defines them), upserted by
-- the rollup; a rerun that finds the same numbers leaves the row as it was. The rates are
-- derived here, once, from the counts (null on a zero denominator).
create table search_rollups (
    day                      date primary key,
    -- the zone the day was read in (ANALYTICS_TZ when it was computed)
    timezone                 text not null,
    searches                 integer not null,
    bot_searches             integer not null,
    unique_searchers         integer not null,
    zero_result_searches     integer not null,
    searches_with_results    integer not null,
    clicked_searches         integer not null,
    converted_searches       integer not null,
    zero_result_rate         double precision generated always as
        (case when searches > 0 then zero_result_searches::float8 / searches end) stored,
    click_through_rate       double precision generated always as
        (case when searches_with_results > 0 then clicked_searches::float8 / searches_with_results end) stored,
    conversion_rate          double precision generated always as
        (case when searches > 0 then converted_searches::float8 / searches end) stored,
    -- [{"query", "count"}], at most 20, by count then query text
    top_queries              jsonb not null,
    top_zero_result_queries  jsonb not null,
    computed_at              timestamptz not null
);

-- Creates the monthly partitions of search_events and search_interactions for every month
-- from `first_month` to `last_month` (both included) that has none yet; returns how many
-- tables it created. Safe to call concurrently and as often as wanted.
create function search_ensure_partitions(first_month date, last_month date) returns integer
language plpgsql as $$
declare
    month    date := date_trunc('month', first_month)::date;
    created  integer := 0;
    parent   text;
    name     text;
begin
    while month <= last_month loop
        foreach parent in array array['search_events', 'search_interactions'] loop
            name := parent || to_char(month, '"_y"YYYY"m"MM');
            if to_regclass(name) is null then
                begin
                    execute format(
                        'create table %I partition of %I for values from (%L) to (%L) with (fillfactor = %s)',
                        name, parent,
                        month::timestamp at time zone 'UTC',
                        (month + interval '1 month')::timestamp at time zone 'UTC',
                        -- room on each page for the clicked/converted flag updates to stay HOT
                        case parent when 'search_events' then 90 else 100 end);
                    created := created + 1;
                exception when duplicate_table or unique_violation then
                    -- created by a concurrent call
                    null;
                end;
            end if;
        end loop;
        month := (month + interval '1 month')::date;
    end loop;
    return created;
end
$$;

select search_ensure_partitions((now() - interval '1 month')::date, (now() + interval '12 months')::date);
