-- no-transaction
drop index concurrently if exists posts.posts_listing_idx;
