//! A user's data export (GDPR Art. 20): build the JSON document of everything the platform
//! holds about them, keyed by the privacy request.
use serde::{Deserialize, Serialize};

use super::JobArgs;

/// "Build the export of privacy request `request_id`."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataExport {
    pub request_id: i64,
}

impl JobArgs for DataExport {
    const QUEUE: &'static str = "data_export";

    fn dedupe_key(&self) -> String {
        format!("data_export:{}", self.request_id)
    }
}
