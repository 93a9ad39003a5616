-- Every session ends with these tables: refresh tokens stop working, and access
-- tokens of sessions ended earlier are accepted again until they expire.
drop table auth.revoked_sessions;
drop table auth.refresh_tokens;
drop table auth.sessions;
