-- no-transaction
-- posts_listing_idx (0011) has the same order and more: this one only costs
-- writes now.
drop index concurrently if exists posts.posts_create_time_id_idx;
