-- posts-service's schema.
create schema posts;

-- Trigram indexes make the title search (ILIKE '%text%') an index scan.
create extension if not exists pg_trgm with schema posts;

create table posts.posts (
    id          uuid        primary key,
    -- a user's posts go with the user
    owner_id    uuid        not null references auth.users (id) on delete cascade,
    title       text        not null check (char_length(title) between 1 and 200),
    content     text        not null check (char_length(content) between 1 and 10000),
    published   boolean     not null default true,
    create_time timestamptz not null default now(),
    update_time timestamptz not null default now()
);

-- Newest-first listing with keyset paging on (create_time, id).
create index posts_create_time_id_idx on posts.posts (create_time desc, id desc);
-- Listing one owner's posts, and the cascade when a user is deleted.
create index posts_owner_id_idx on posts.posts (owner_id, create_time desc, id desc);
create index posts_title_trgm_idx on posts.posts using gin (title posts.gin_trgm_ops);
