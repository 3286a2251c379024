//! The retention policy: how long each kind of data is kept and what happens after. The
//! worker's sweep (`worker/src/jobs/retention_sweep.rs`) carries it out; the admin view
//! (`GET /api/v1/admin/privacy/retention`) shows it. One table, so the two cannot disagree.
use serde::Serialize;

use crate::config::Config;

/// Guest search history is kept this long (a signed-in user's is theirs until erasure).
pub const GUEST_HISTORY_KEEP_DAYS: i64 = 30;
/// Finished job records are kept this long for ops and audits.
pub const FINISHED_JOB_KEEP_DAYS: i64 = 30;

/// One kind of data and its rule.
#[derive(Debug, Clone, Serialize)]
pub struct Rule {
    /// The kind, as the sweep's counts name it.
    pub kind: &'static str,
    /// Days kept; `None` is forever.
    pub keep_days: Option<i64>,
    /// `delete`, `keep`, or `anonymize` (on erasure only).
    pub action: &'static str,
    /// Whether a legal hold on the user keeps their rows past the rule.
    pub honours_legal_hold: bool,
    pub note: &'static str,
}

/// The policy in force under `config`.
pub fn policy(config: &Config) -> Vec<Rule> {
    let search = Some(config.retention_search_days);
    vec![
        Rule {
            kind: "search_events",
            keep_days: search,
            action: "delete",
            honours_legal_hold: true,
            note: "RETENTION_SEARCH_DAYS; whole expired months are dropped as partitions",
        },
        Rule {
            kind: "search_interactions",
            keep_days: search,
            action: "delete",
            honours_legal_hold: true,
            note: "with their search events",
        },
        Rule {
            kind: "search_ids",
            keep_days: search,
            action: "delete",
            honours_legal_hold: true,
            note: "a search's identity, with its event",
        },
        Rule {
            kind: "search_day_aggregates",
            keep_days: search,
            action: "delete",
            honours_legal_hold: false,
            note: "the per-day counts the rollup reads (its searcher rows name users); the \
                   day's rollup itself is kept",
        },
        Rule {
            kind: "guest_search_history",
            keep_days: Some(GUEST_HISTORY_KEEP_DAYS),
            action: "delete",
            honours_legal_hold: false,
            note: "guests only: a user's history lasts until they delete it or are erased",
        },
        Rule {
            kind: "export_documents",
            keep_days: Some(config.export_ttl_days),
            action: "delete",
            honours_legal_hold: true,
            note: "EXPORT_TTL_DAYS after the export is done",
        },
        Rule {
            kind: "finished_job_records",
            keep_days: Some(FINISHED_JOB_KEEP_DAYS),
            action: "delete",
            honours_legal_hold: false,
            note: "done or skipped; dead letters stay until an admin acts",
        },
        Rule {
            kind: "audit_log",
            keep_days: None,
            action: "keep",
            honours_legal_hold: false,
            note: "append-only (a trigger refuses UPDATE, DELETE and TRUNCATE)",
        },
        Rule {
            kind: "bookings",
            keep_days: None,
            action: "anonymize",
            honours_legal_hold: true,
            note: "business records: kept, the person's identity replaced on erasure",
        },
    ]
}
