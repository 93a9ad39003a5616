-- Login sessions, their refresh tokens, and the sessions that ended while access
-- tokens of theirs may still be unexpired (auth-service's sessions.rs). New
-- tables only: binaries from before this migration never touch them.

-- One row per login session, while it lasts: a logout, a password change, a
-- refresh token used twice or the account's deletion deletes it at once, and
-- auth-service purges those past SESSION_IDLE_TIMEOUT_SECS since their last use
-- or SESSION_MAX_AGE_SECS since their login every ten minutes.
create table auth.sessions (
    -- the `sid` of the session's access tokens (UUIDv7)
    id                       uuid        primary key,
    user_id                  uuid        not null references auth.users (id) on delete cascade,
    -- the client as it described itself at login, trimmed by auth-service
    user_agent               text        not null default ''
                                         check (char_length(user_agent) <= 256),
    client_address           inet,
    create_time              timestamptz not null default now(),
    -- the last login or refresh
    last_use_time            timestamptz not null default now(),
    -- the `exp` of the last access token issued in the session: how long its
    -- revocation must be remembered once it ends
    access_token_expire_time timestamptz not null
);

-- A user's sessions, most recently used first (ListSessions, the cap of 100 per
-- user), and the cascade when the user is deleted.
create index sessions_user_id_last_use_time_idx on auth.sessions (user_id, last_use_time desc);
-- The purge of idle and of old sessions.
create index sessions_last_use_time_idx on auth.sessions (last_use_time);
create index sessions_create_time_idx on auth.sessions (create_time);

-- Refresh tokens by their SHA-256 (a fast hash suits a 256-bit random secret);
-- the tokens themselves are never stored. Spending one sets spent_time in the
-- statement that checks it was unspent, so one of two concurrent refreshes
-- wins. Spent ones are kept while their session lasts: presenting one again
-- ends the session (reuse detection).
create table auth.refresh_tokens (
    hash        bytea       primary key check (length(hash) = 32),
    session_id  uuid        not null references auth.sessions (id) on delete cascade,
    create_time timestamptz not null default now(),
    spent_time  timestamptz
);

create index refresh_tokens_session_id_idx on auth.refresh_tokens (session_id);

-- Sessions that ended while an access token of theirs may be unexpired, for
-- token verifiers (ListRevokedSessions). No user id: they outlive a deleted
-- account by at most the access token lifetime (and a minute for clocks), and
-- a session id is random, so they say nothing of whose sessions they were.
create table auth.revoked_sessions (
    session_id  uuid        primary key,
    -- when the statement that ended it ran; verifiers ask for those since a
    -- time that trails the clock, so a transaction still committing is not missed
    revoke_time timestamptz not null default clock_timestamp(),
    -- the `exp` of the session's last access token
    expire_time timestamptz not null
);

create index revoked_sessions_revoke_time_idx on auth.revoked_sessions (revoke_time);
create index revoked_sessions_expire_time_idx on auth.revoked_sessions (expire_time);
