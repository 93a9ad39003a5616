-- no-transaction
-- The newest-first order with the visibility columns and the title beside it,
-- so that the rows a page skips (the course's `skip`) and the titles a search
-- walks through are read from the index alone, without visiting the table:
-- listing.rs selects a page's ids this way, then reads the page's rows by id.
-- Built concurrently, so a large table stays writable meanwhile; a build that
-- fails leaves an invalid index behind: drop it and start again.
create index concurrently if not exists posts_listing_idx
    on posts.posts (create_time desc, id desc) include (published, owner_id, title);
