-- Each post's like count, kept beside its likes, so that a post with 100,000
-- likes costs one row to count, as one with ten does. Kept exact by a trigger
-- on every row of votes.votes added or removed, whoever removes it: votes-service,
-- or the cascade when a user or a post is deleted. A post's count goes with the
-- post. Concurrent likes of one post queue on its count row, each adding one, so
-- no like is lost.
create table votes.like_counts (
    post_id    uuid   primary key references posts.posts (id) on delete cascade,
    like_count bigint not null check (like_count >= 0)
);

create function votes.count_likes() returns trigger
    language plpgsql
    as $$
begin
    if tg_op = 'INSERT' then
        insert into votes.like_counts as counted (post_id, like_count)
        values (new.post_id, 1)
        on conflict (post_id) do update set like_count = counted.like_count + 1;
        return new;
    end if;
    -- When the post itself is being deleted, its count row may be gone already.
    update votes.like_counts set like_count = like_count - 1 where post_id = old.post_id;
    return old;
end
$$;

create trigger votes_count_likes
    after insert or delete on votes.votes
    for each row execute function votes.count_likes();

insert into votes.like_counts (post_id, like_count)
select post_id, count(*) from votes.votes group by post_id;
