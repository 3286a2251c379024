-- The user of a search event or a history entry is checked by the statements that write
-- them, not by foreign keys.
--
-- Why: every writer already takes the user's row FOR KEY SHARE and writes nothing for a user
-- that is missing or erased (search_record_events since migration 0015; the guest-history
-- claim, api::search::history::claim), which is all a foreign key's check does, and more:
-- the key cannot tell an erased account from a live one. Users are never deleted (erasure
-- keeps the row and sets erased_at), so no delete needs the key either. The key's check ran
-- once per written row, a query of its own through SPI: by the backend's own CPU time
-- (/proc/self/stat) over 300 calls of 20 events on one database, alternated, the batch write
-- cost 182-200 us per event with both keys and 162-165 us without them.
alter table search_events drop constraint search_events_user_id_fkey;
alter table search_history drop constraint search_history_user_id_fkey;

-- The references stay declared, where a reader of the schema (and the export test's search
-- for every table that references a user, tests/tests/e2e/privacy.rs) finds them.
comment on column search_events.user_id is
    'references users(id): checked by its writers, not by a foreign key (migration 0017)';
comment on column search_history.user_id is
    'references users(id): checked by its writers, not by a foreign key (migration 0017)';
