-- Post versions for etags, and posts-service's read interface for other services.

-- Raised by every change to a post; a post's etag is its revision.
alter table posts.posts add column revision bigint not null default 1;

-- Who may see which post: published posts, and a person's own drafts. This is the
-- only statement of the rule. posts-service reads through it, and any other service
-- that needs posts (votes-service, to refuse likes of drafts it cannot see) reads
-- them only through it, never from posts.posts. A one-statement SQL function: the
-- planner inlines it, so the posts indexes serve queries made through it.
create function posts.visible_posts(viewer uuid) returns setof posts.posts
    language sql stable
    as $$ select * from posts.posts where published or owner_id = viewer $$;
