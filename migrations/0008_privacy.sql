-- Privacy (GDPR): export and erasure requests, the append-only audit log, legal holds, the
-- export documents, and the email ledger generalized beyond bookings (the "your data export
-- is ready" email is keyed by its privacy request).

-- A user under legal hold is never erased (the request fails with the reason, audited).
alter table users add column legal_hold boolean not null default false,
                  add column legal_hold_reason text;

create table privacy_requests (
    id            bigserial primary key,
    user_id       bigint not null references users(id),
    kind          text not null check (kind in ('export', 'erasure')),
    state         text not null default 'pending'
                  check (state in ('pending', 'running', 'done', 'failed')),
    -- who asked: the user themselves, or an admin
    requested_by  bigint not null references users(id),
    -- why it failed (e.g. a legal hold); never personal data
    reason        text,
    -- the job that carries it out (no foreign key: finished job records are purged)
    job_id        bigint,
    created_at    timestamptz not null default now(),
    finished_at   timestamptz,
    -- for a done export: when its document is deleted
    expires_at    timestamptz
);
create index privacy_requests_user_idx on privacy_requests (user_id, created_at);
-- one export and one erasure in flight per user: the second request finds the first
create unique index privacy_requests_one_in_flight on privacy_requests (user_id, kind)
    where state in ('pending', 'running');

-- The export documents, keyed by request (a rerun of the export job rewrites the same one).
-- Deleted by erasure and after expires_at. The document itself is its chunks, in order, so a
-- download streams it chunk by chunk instead of holding the whole of it in memory.
create table export_documents (
    request_id  bigint primary key references privacy_requests(id),
    user_id     bigint not null references users(id),
    created_at  timestamptz not null default now(),
    expires_at  timestamptz not null
);
-- text, not bytea: the document is JSON (UTF-8, split at character boundaries), and a scan of
-- every text column (the erasure test's) must see it
create table export_chunks (
    request_id  bigint not null references export_documents(request_id) on delete cascade,
    seq         integer not null check (seq >= 0),
    data        text not null,
    primary key (request_id, seq)
);
create index export_documents_user_idx on export_documents (user_id);
create index export_documents_expires_idx on export_documents (expires_at);

-- Who did what to whose data, and how it ended. Ids only: no emails, no names.
create table audit_log (
    id               bigserial primary key,
    -- a user id, or 'retention'
    actor            text not null,
    subject_user_id  bigint references users(id),
    action           text not null,
    outcome          text not null,
    -- counts and ids only
    detail           jsonb not null default '{}',
    at               timestamptz not null default now()
);
create index audit_log_subject_idx on audit_log (subject_user_id, at);
create index audit_log_at_idx on audit_log (at);

create function audit_log_append_only() returns trigger language plpgsql as $$
begin
    raise exception 'audit_log is append-only: % refused', tg_op
        using errcode = 'insufficient_privilege';
end
$$;
create trigger audit_log_no_update_or_delete before update or delete on audit_log
    for each row execute function audit_log_append_only();
create trigger audit_log_no_truncate before truncate on audit_log
    for each statement execute function audit_log_append_only();

-- The email ledger beyond bookings: a row is about a booking (booking_id, booking_version:
-- keyed as before) or about a privacy request (privacy_request_id, keyed by request, kind
-- and recipient). NULLs are distinct, so neither key constrains the other's rows.
alter table email_ledger alter column booking_id drop not null,
                         alter column booking_version drop not null,
                         add column privacy_request_id bigint references privacy_requests(id),
                         add constraint email_ledger_one_subject check (
                             (booking_id is not null and booking_version is not null
                              and privacy_request_id is null)
                             or (booking_id is null and booking_version is null
                                 and privacy_request_id is not null)),
                         add constraint email_ledger_privacy_key
                             unique (privacy_request_id, kind, recipient_id);
