//! A user's erasure (GDPR Art. 17): cancel their future lessons, then anonymize them.
use serde::{Deserialize, Serialize};

use super::JobArgs;

/// "Carry out erasure request `request_id`."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Erasure {
    pub request_id: i64,
}

impl JobArgs for Erasure {
    const QUEUE: &'static str = "erasure";

    fn dedupe_key(&self) -> String {
        format!("erasure:{}", self.request_id)
    }
}
