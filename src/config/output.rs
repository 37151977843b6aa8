//! `[output]`: output wire formats.

use serde::{Deserialize, Serialize};

/// `[output]`: wire formats of the output topics (docs/model.md "Guarantees").
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// `json` (default) or `protobuf` (`engage.v1.ScoreChanged`).
    pub scores_format: crate::vocab::Format,
    /// `json` (default) or `protobuf` (`engage.v1.ChurnAlert`).
    pub alerts_format: crate::vocab::Format,
    /// `json` (default) or `protobuf` (`engage.v1.ErasureConfirmation`),
    /// for `topics.erasure_confirmations`.
    pub erasure_confirmations_format: crate::vocab::Format,
}
