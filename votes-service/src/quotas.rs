//! The per-person quota on votes: a like and a like taken back count alike, so
//! liking and unliking in a loop is bounded as one.
//!
//! Checked after the caller is known and the request is valid, before any SQL,
//! so a refused vote costs no database work. Counted in this replica's memory.

use service_kit::{
    ApiError,
    quota::{self, Quota},
};
use uuid::Uuid;

use crate::config::QuotaSettings;

/// The quota's name, as `ErrorInfo.metadata["quota"]` gives it.
pub const VOTE: &str = "vote";

pub struct Quotas {
    vote: Quota<Uuid>,
}

impl Quotas {
    /// The quota `settings` give, forgetting idle people periodically; needs a
    /// Tokio runtime.
    pub fn new(settings: &QuotaSettings) -> Self {
        let vote = Quota::per_minute(settings.votes_per_minute);
        vote.purge_periodically();
        Self { vote }
    }

    /// Counts a vote by `person`, either way, or refuses it.
    pub fn vote(&self, person: Uuid) -> Result<(), ApiError> {
        self.vote
            .check(&person)
            .map_err(|wait| quota::exceeded(VOTE, wait))
    }
}
