-- Idempotency-Key on POST /api/v1/bookings (api/src/idempotency.rs): the first successful
-- answer to a user's key, written in the transaction that made the booking, and replayed to
-- a retry of the same request for 24 hours. A key in flight is not a row but an advisory
-- lock held by its transaction, so a failed request leaves nothing behind.
create table idempotency_keys (
    user_id          bigint not null references users (id) on delete cascade,
    key              text not null check (char_length(key) between 1 and 255),
    -- sha-256 of the operation and the request as parsed: a retry must match it
    fingerprint      bytea not null check (octet_length(fingerprint) = 32),
    response_status  smallint not null check (response_status between 100 and 599),
    -- the answer as it was sent, so that a replay is byte for byte
    response_body    bytea not null,
    -- from the application's clock: the 24 hours are counted from here
    created_at       timestamptz not null,
    primary key (user_id, key)
);
