//! Per-person quotas on the calls that cost the most: creating a post (a write
//! that stays) and searching (a scan of titles that no index serves).
//!
//! Checked after the caller is known and the request is valid, before any SQL,
//! so a refused call costs no database work. Counted in this replica's memory.

use service_kit::{
    ApiError,
    quota::{self, Quota},
};
use uuid::Uuid;

use crate::{config::QuotaSettings, listing::Query};

/// The quota names, as `ErrorInfo.metadata["quota"]` gives them.
pub const CREATE_POST: &str = "create_post";
pub const SEARCH: &str = "search";

pub struct Quotas {
    create_post: Quota<Uuid>,
    search: Quota<Uuid>,
}

impl Quotas {
    /// The quotas `settings` give, forgetting idle people periodically; needs a
    /// Tokio runtime.
    pub fn new(settings: &QuotaSettings) -> Self {
        let quotas = Self {
            create_post: Quota::per_minute(settings.posts_per_minute),
            search: Quota::per_minute(settings.searches_per_minute),
        };
        quotas.create_post.purge_periodically();
        quotas.search.purge_periodically();
        quotas
    }

    /// Counts a post created by `person`, or refuses it.
    pub fn create_post(&self, person: Uuid) -> Result<(), ApiError> {
        self.create_post
            .check(&person)
            .map_err(|wait| quota::exceeded(CREATE_POST, wait))
    }

    /// Counts a list by `person` if it searches, or refuses it; a list without a
    /// search is free.
    pub fn list(&self, person: Uuid, query: &Query) -> Result<(), ApiError> {
        if query.filter.search.is_none() {
            return Ok(());
        }
        self.search
            .check(&person)
            .map_err(|wait| quota::exceeded(SEARCH, wait))
    }
}
