-- votes-service's schema.
create schema votes;

create table votes.votes (
    -- a post's likes go with the post, and a user's likes with the user
    post_id     uuid        not null references posts.posts (id) on delete cascade,
    user_id     uuid        not null references auth.users (id) on delete cascade,
    create_time timestamptz not null default now(),
    -- one like per person and post, enforced by the database itself
    primary key (post_id, user_id)
);

-- The cascade when a user is deleted; the primary key serves counting by post.
create index votes_user_id_idx on votes.votes (user_id);
