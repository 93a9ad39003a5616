//! posts-service: filled in by the posts and votes work.
