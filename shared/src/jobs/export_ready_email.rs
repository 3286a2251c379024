//! The "your data export is ready" email of one export request, to the user who owns it.
use serde::{Deserialize, Serialize};

use super::JobArgs;

/// "Tell the owner of export request `request_id` that it is ready."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportReadyEmail {
    pub request_id: i64,
}

impl JobArgs for ExportReadyEmail {
    const QUEUE: &'static str = "export_ready_email";

    fn dedupe_key(&self) -> String {
        format!("export_ready_email:{}", self.request_id)
    }
}
