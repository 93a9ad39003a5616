drop function votes.like_count_changes_purged_through();
drop function votes.like_count_changes(pg_snapshot, pg_snapshot);
drop trigger votes_announce_like_count_events on votes.like_count_events;
drop function votes.announce_like_count_events();
drop trigger votes_record_like_count_events on votes.like_counts;
drop function votes.record_like_count_event();
drop table votes.like_count_events_purged;
drop table votes.like_count_events;
