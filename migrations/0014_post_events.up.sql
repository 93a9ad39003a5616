-- posts-service's outbox: every change to a post, written by a trigger in the
-- transaction that makes it (so a cascade from a deleted account, or a draft
-- made of a published post, is recorded as surely as a DeletePost), and
-- announced on the channel `posts_post_events` (see posts.announce below).
-- WatchPosts reads it; the service deletes what is older than its retention.
create table posts.post_events (
    seq           bigint      generated always as identity primary key,
    -- The writing transaction. Readers take the events of the transactions
    -- that committed between two snapshots (pg_visible_in_snapshot), so an
    -- event is never passed over because a transaction with a higher number
    -- committed first.
    xid           xid8        not null default pg_current_xact_id(),
    -- When the row changed, just before the commit. Within one transaction, and
    -- between two that changed the same post (the second waited for the
    -- first's row lock), it follows the order of the changes.
    event_time    timestamptz not null default clock_timestamp(),
    kind          text        not null check (kind in ('created', 'updated', 'deleted')),
    post_id       uuid        not null,
    -- Null only in the deletion of a post deleted with its owner's account.
    owner_id      uuid,
    -- The post after the change; null for a deletion.
    title         text,
    content       text,
    published     boolean,
    revision      bigint,
    create_time   timestamptz,
    update_time   timestamptz,
    -- What a watcher's filters need of the post before the change; null for a
    -- creation.
    old_title     text,
    old_published boolean
);

create index post_events_xid_idx on posts.post_events (xid);

-- The newest transaction whose events the retention purge has deleted: a
-- cursor from before it has lost events.
create table posts.post_events_purged (
    one          boolean primary key default true check (one),
    through_xid  xid8    not null
);
insert into posts.post_events_purged (through_xid) values ('0');

create function posts.record_post_event() returns trigger
    language plpgsql
    as $$
begin
    if tg_op = 'INSERT' then
        insert into posts.post_events (kind, post_id, owner_id, title, content, published,
                                       revision, create_time, update_time)
        values ('created', new.id, new.owner_id, new.title, new.content, new.published,
                new.revision, new.create_time, new.update_time);
    elsif tg_op = 'UPDATE' then
        -- Only what readers see; a revision alone raised changes nothing shown.
        if (new.title, new.content, new.published) is distinct from
           (old.title, old.content, old.published) then
            insert into posts.post_events (kind, post_id, owner_id, title, content, published,
                                           revision, create_time, update_time,
                                           old_title, old_published)
            values ('updated', new.id, new.owner_id, new.title, new.content, new.published,
                    new.revision, new.create_time, new.update_time, old.title, old.published);
        end if;
    else
        -- A deleted post's history goes with it; watchers get its deletion.
        delete from posts.post_events where post_id = old.id;
        if current_setting('agora.announce', true) is distinct from 'after-commit' then
            -- Not posts-service's DeletePost (which calls
            -- posts.announce_after_commit()): the cascade from the owner's
            -- account being deleted, or a deletion by hand. Nothing that named
            -- the person is kept, only that a post (published or not) went,
            -- for FEED_RETENTION_SECS.
            insert into posts.post_events (kind, post_id, old_published)
            values ('deleted', old.id, old.published);
        else
            insert into posts.post_events (kind, post_id, owner_id, old_title, old_published)
            values ('deleted', old.id, old.owner_id, old.title, old.published);
        end if;
    end if;
    return null;
end
$$;

create trigger posts_record_events
    after insert or update or delete on posts.posts
    for each row execute function posts.record_post_event();

-- Tells WatchPosts' listeners that posts changed.
create function posts.announce() returns void
    language plpgsql
    as $$
begin
    perform pg_notify('posts_post_events', '');
end
$$;

-- A NOTIFY in a transaction takes a lock on the whole database's queue at
-- commit and holds it through the commit's flush to disk, so notifying
-- transactions commit one at a time (pgbench here: 2,125 inserts/s with one,
-- 9,084 without). So posts-service's own writes call
-- posts.announce_after_commit() and announce in a statement of their own once
-- committed, which writes nothing to disk; any other writer's change (a
-- cascade from a deleted account, a change by hand) is announced by the
-- trigger, one notification per transaction (equal ones fold together).
create function posts.announce_after_commit() returns boolean
    language sql volatile
    as $$ select set_config('agora.announce', 'after-commit', true) is not null $$;

create function posts.announce_post_events() returns trigger
    language plpgsql
    as $$
begin
    if current_setting('agora.announce', true) is distinct from 'after-commit' then
        perform posts.announce();
    end if;
    return null;
end
$$;

create trigger posts_announce_events
    after insert on posts.post_events
    for each statement execute function posts.announce_post_events();
