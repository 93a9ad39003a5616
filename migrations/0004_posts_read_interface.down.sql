drop function posts.visible_posts(uuid);
alter table posts.posts drop column revision;
