-- no-transaction
create index concurrently if not exists posts_create_time_id_idx
    on posts.posts (create_time desc, id desc);
