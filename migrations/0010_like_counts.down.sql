drop trigger votes_count_likes on votes.votes;
drop function votes.count_likes();
drop table votes.like_counts;
