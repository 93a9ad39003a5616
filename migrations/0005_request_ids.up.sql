-- Request ids (AIP-155) that make CreatePost and CreateUser safe to retry: each
-- remembers, for a day, what the first request with it created. The primary keys
-- decide races: a second request with an id waits for the first to commit, then
-- finds its row. An id older than a day is taken over by the next request naming
-- it, and the services purge such rows every ten minutes (by `create_time`).

-- posts-service's: a person's request ids, each with its post and a digest of the
-- request (title, content, published) that a retry must repeat.
create table posts.create_post_requests (
    -- a user's request ids go with the user
    owner_id     uuid        not null references auth.users (id) on delete cascade,
    request_id   uuid        not null,
    -- no foreign key: the row outlives a deleted post, so that a retry is answered
    -- POST_NOT_FOUND instead of creating the post a second time
    post_id      uuid        not null,
    -- sha-256 of the request, not its text: a day of posts stays small
    request_hash bytea       not null,
    create_time  timestamptz not null default now(),
    -- two people may pick the same id independently
    primary key (owner_id, request_id)
);

create index create_post_requests_create_time_idx on posts.create_post_requests (create_time);

-- auth-service's: registration is anonymous, so an id alone is the key. A retry
-- must repeat the email and password, checked against the user's row and its
-- argon2id hash: the password is not kept here in any form.
create table auth.create_user_requests (
    request_id  uuid        primary key,
    -- A retry after the user is gone registers anew. Deferred to commit because
    -- the request row is written before the user: a retry then waits on this key
    -- instead of failing on the user's email.
    user_id     uuid        not null references auth.users (id) on delete cascade
                            deferrable initially deferred,
    create_time timestamptz not null default now()
);

-- The cascade when a user is deleted, and the purge.
create index create_user_requests_user_id_idx on auth.create_user_requests (user_id);
create index create_user_requests_create_time_idx on auth.create_user_requests (create_time);
