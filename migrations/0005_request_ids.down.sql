drop table auth.create_user_requests;
drop table posts.create_post_requests;
