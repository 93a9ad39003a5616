-- votes-service's outbox: every change of a post's like count, written by a
-- trigger on votes.like_counts in the transaction that makes it (likes taken
-- back by a cascade from a deleted account included), and announced on the
-- channel `votes_like_count_events` as posts.post_events is on its own (see
-- 0014: votes-service announces its own votes once committed, the trigger any
-- other writer's). votes-service deletes what is older than its retention.
create table votes.like_count_events (
    seq        bigint      generated always as identity primary key,
    -- The writing transaction; see posts.post_events.
    xid        xid8        not null default pg_current_xact_id(),
    event_time timestamptz not null default clock_timestamp(),
    post_id    uuid        not null,
    like_count bigint      not null
);

create index like_count_events_xid_idx on votes.like_count_events (xid);

-- The newest transaction whose events the retention purge has deleted.
create table votes.like_count_events_purged (
    one         boolean primary key default true check (one),
    through_xid xid8    not null
);
insert into votes.like_count_events_purged (through_xid) values ('0');

create function votes.record_like_count_event() returns trigger
    language plpgsql
    as $$
begin
    if tg_op = 'INSERT' or new.like_count <> old.like_count then
        insert into votes.like_count_events (post_id, like_count)
        values (new.post_id, new.like_count);
    end if;
    return null;
end
$$;

create trigger votes_record_like_count_events
    after insert or update on votes.like_counts
    for each row execute function votes.record_like_count_event();

-- A post's count goes with the post, and so does the history of its count.
create function votes.forget_like_count_events() returns trigger
    language plpgsql
    as $$
begin
    delete from votes.like_count_events where post_id = old.post_id;
    return null;
end
$$;

create trigger votes_forget_like_count_events
    after delete on votes.like_counts
    for each row execute function votes.forget_like_count_events();

create function votes.announce() returns void
    language plpgsql
    as $$
begin
    perform pg_notify('votes_like_count_events', '');
end
$$;

create function votes.announce_after_commit() returns boolean
    language sql volatile
    as $$ select set_config('agora.announce', 'after-commit', true) is not null $$;

create function votes.announce_like_count_events() returns trigger
    language plpgsql
    as $$
begin
    if current_setting('agora.announce', true) is distinct from 'after-commit' then
        perform votes.announce();
    end if;
    return null;
end
$$;

create trigger votes_announce_like_count_events
    after insert on votes.like_count_events
    for each statement execute function votes.announce_like_count_events();

-- votes-service's read interface for like-count changes (posts-service's
-- WatchPosts reads them only through these): the changes made by the
-- transactions visible in `upto` and not in `after`, and the newest
-- transaction whose changes the purge has deleted. One-statement SQL
-- functions, inlined by the planner, so the xid index serves them.
create function votes.like_count_changes(after pg_snapshot, upto pg_snapshot)
    returns table (seq bigint, xid xid8, event_time timestamptz, post_id uuid, like_count bigint)
    language sql stable
    as $$
        select seq, xid, event_time, post_id, like_count
        from votes.like_count_events
        where xid >= pg_snapshot_xmin(after)
          and xid < pg_snapshot_xmax(upto)
          and not pg_visible_in_snapshot(xid, after)
          and pg_visible_in_snapshot(xid, upto)
    $$;

create function votes.like_count_changes_purged_through() returns xid8
    language sql stable
    as $$ select through_xid from votes.like_count_events_purged $$;
