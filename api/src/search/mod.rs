//! Search analytics as the API records it: who searched (a user or a guest session), what
//! (the query and its normalized form), from what kind of client (a keyed hash of the
//! address, never the address; a user-agent class), what they did with the results, and
//! their recent-search history. The numbers are computed later by the worker's nightly
//! rollup; nothing is aggregated here.
pub mod client;
pub mod history;
pub mod ingest;
pub mod interactions;
pub mod searcher;

use unicode_normalization::UnicodeNormalization;

/// The form queries are counted and deduplicated by: Unicode NFKC (so "ｐｉａｎｏ" and the
/// "ﬁ" ligature read as "piano" and "fi"), lower-cased, runs of whitespace collapsed to one
/// space, trimmed.
pub fn normalize_query(raw: &str) -> String {
    let lower = raw.nfkc().collect::<String>().to_lowercase();
    let mut out = String::with_capacity(lower.len());
    for word in lower.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::normalize_query;

    #[test]
    fn queries_normalize_to_one_form() {
        assert_eq!(normalize_query("  Piano   Lessons\t\n"), "piano lessons");
        assert_eq!(normalize_query("ｐｉａｎｏ"), "piano");
        assert_eq!(
            normalize_query("Violin\u{00A0}\u{3000}TEACHER"),
            "violin teacher"
        );
        assert_eq!(normalize_query("ﬁddle"), "fiddle");
        assert_eq!(normalize_query("Ｃafé"), "café");
        // a decomposed é (e + combining acute) is the same query as a composed one
        assert_eq!(normalize_query("Cafe\u{0301}"), normalize_query("Café"));
        assert_eq!(normalize_query(" \t "), "");
        assert_eq!(normalize_query("ÜBER Straße"), "über straße");
    }
}
