drop trigger posts_announce_events on posts.post_events;
drop function posts.announce_post_events();
drop function posts.announce_after_commit();
drop function posts.announce();
drop trigger posts_record_events on posts.posts;
drop function posts.record_post_event();
drop table posts.post_events_purged;
drop table posts.post_events;
