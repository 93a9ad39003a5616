//! What one watcher may see and asked to see, and the message each change
//! makes for it: the changes to the view `ListPosts` with the same filters
//! would show, kept current.

use agora_proto::posts::v1::{
    self as proto, LikeCountChanged, PostRemoved, watch_posts_response::Event as Message,
};
use service_kit::fields::timestamp;
use uuid::Uuid;

use super::events::{Change, Event, PostState, Shown};
use crate::listing::Filter;

pub struct View {
    pub viewer: Uuid,
    /// The search, lowercased once.
    search: Option<String>,
    owner_id: Option<Uuid>,
}

impl View {
    pub fn new(viewer: Uuid, filter: Filter) -> Self {
        Self {
            viewer,
            search: filter.search.map(|search| search.to_lowercase()),
            owner_id: filter.owner_id,
        }
    }

    /// Whether a post that shows `shown` and belongs to `owner_id` is in view:
    /// published or the viewer's own, and matching the filters. A deletion
    /// that names neither owner nor title (the owner's account went with it)
    /// reaches whoever could see the post and filters by no owner.
    fn shows(&self, owner_id: Option<Uuid>, shown: &Shown) -> bool {
        (shown.published || owner_id == Some(self.viewer))
            && self.owner_id.is_none_or(|wanted| owner_id == Some(wanted))
            && self.search.as_deref().is_none_or(|search| {
                shown
                    .title
                    .as_ref()
                    .is_none_or(|title| title.to_lowercase().contains(search))
            })
    }

    /// The message `event` makes for this watcher, if any.
    pub fn message(&self, event: &Event) -> Option<Message> {
        let post = |state: &PostState, like_count| self.post(event, state, like_count);
        let removed = || {
            Message::Deleted(PostRemoved {
                id: event.post_id.to_string(),
            })
        };
        match &event.change {
            Change::Created(state) => self
                .shows(event.owner_id, &state.shown())
                .then(|| Message::Created(post(state, Some(0)))),
            Change::Updated { after, before } => {
                match (
                    self.shows(event.owner_id, before),
                    self.shows(event.owner_id, &after.shown()),
                ) {
                    (true, true) => Some(Message::Updated(post(after, None))),
                    (false, true) => Some(Message::Created(post(after, None))),
                    (true, false) => Some(removed()),
                    (false, false) => None,
                }
            }
            Change::Deleted { before } => self.shows(event.owner_id, before).then(removed),
            Change::LikeCount { like_count, now } => self.shows(event.owner_id, now).then(|| {
                Message::LikeCountChanged(LikeCountChanged {
                    post_id: event.post_id.to_string(),
                    like_count: *like_count,
                })
            }),
        }
    }

    fn post(&self, event: &Event, state: &PostState, like_count: Option<i64>) -> proto::Post {
        proto::Post {
            id: event.post_id.to_string(),
            title: state.title.clone(),
            content: state.content.clone(),
            published: Some(state.published),
            create_time: Some(timestamp(state.create_time)),
            update_time: Some(timestamp(state.update_time)),
            owner_id: event.owner_id.map(|id| id.to_string()).unwrap_or_default(),
            owner: None,
            like_count,
            liked_by_caller: None,
            etag: state.revision.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::*;
    use crate::feed::cursor::{EventKey, Source};

    fn state(title: &str, published: bool) -> PostState {
        PostState {
            title: title.to_owned(),
            content: "c".to_owned(),
            published,
            revision: 1,
            create_time: OffsetDateTime::UNIX_EPOCH,
            update_time: OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn event(owner_id: Uuid, change: Change) -> Event {
        Event {
            key: EventKey {
                micros: 0,
                source: Source::Posts,
                seq: 1,
            },
            time: OffsetDateTime::UNIX_EPOCH,
            post_id: Uuid::nil(),
            owner_id: Some(owner_id),
            change,
        }
    }

    fn kind(message: Option<Message>) -> &'static str {
        match message {
            None => "none",
            Some(Message::Created(_)) => "created",
            Some(Message::Updated(_)) => "updated",
            Some(Message::Deleted(_)) => "deleted",
            Some(Message::LikeCountChanged(_)) => "likes",
            Some(Message::Checkpoint(_)) => "checkpoint",
        }
    }

    #[test]
    fn drafts_are_their_owners_alone() {
        let (owner, other) = (Uuid::now_v7(), Uuid::now_v7());
        let draft = event(owner, Change::Created(state("t", false)));
        assert_eq!(
            kind(View::new(owner, Filter::default()).message(&draft)),
            "created"
        );
        assert_eq!(
            kind(View::new(other, Filter::default()).message(&draft)),
            "none"
        );
        let liked_draft = event(
            owner,
            Change::LikeCount {
                like_count: 1,
                now: state("t", false).shown(),
            },
        );
        assert_eq!(
            kind(View::new(other, Filter::default()).message(&liked_draft)),
            "none"
        );
        assert_eq!(
            kind(View::new(owner, Filter::default()).message(&liked_draft)),
            "likes"
        );
    }

    #[test]
    fn posts_entering_and_leaving_the_view_are_created_and_deleted() {
        let (owner, other) = (Uuid::now_v7(), Uuid::now_v7());
        let view = View::new(other, Filter::default());
        let update = |before: (&str, bool), after: (&str, bool)| {
            event(
                owner,
                Change::Updated {
                    after: state(after.0, after.1),
                    before: state(before.0, before.1).shown(),
                },
            )
        };
        assert_eq!(
            kind(view.message(&update(("a", false), ("a", true)))),
            "created"
        );
        assert_eq!(
            kind(view.message(&update(("a", true), ("a", false)))),
            "deleted"
        );
        assert_eq!(
            kind(view.message(&update(("a", true), ("b", true)))),
            "updated"
        );
        assert_eq!(
            kind(view.message(&update(("a", false), ("b", false)))),
            "none"
        );

        let searching = View::new(
            other,
            Filter {
                search: Some("RuSt".to_owned()),
                owner_id: Some(owner),
            },
        );
        assert_eq!(
            kind(searching.message(&update(("Rust!", true), ("Go", true)))),
            "deleted"
        );
        assert_eq!(
            kind(searching.message(&update(("Go", true), ("rusty", true)))),
            "created"
        );
        let elsewhere = event(Uuid::now_v7(), Change::Created(state("rust", true)));
        assert_eq!(kind(searching.message(&elsewhere)), "none");
        let deleted = event(
            owner,
            Change::Deleted {
                before: state("trust", true).shown(),
            },
        );
        assert_eq!(kind(searching.message(&deleted)), "deleted");
    }
}
