-- Failed logins counted per account and per client address, for a delay that
-- grows with each failure instead of a lock (auth-service's throttle.rs):
--   account:<auth.email_key(email)>   failures for one email, in any spelling,
--                                     registered or not
--   address:<ip or IPv6 /64>          failures from one client address, any email
-- A count is forgotten once a whole window (LOGIN_FAILURE_WINDOW_SECS) passes
-- without a failure, so it needs the time of the last failure rather than of
-- the first. The old counts are dropped with the old shape: they are at most a
-- window old, and losing them gives an attacker one fresh allowance.
--
-- Still unlogged (no WAL per failed login; a database crash forgets the
-- counts), and still purged by auth-service every ten minutes.
drop table auth.login_failures;

create unlogged table auth.login_failures (
    key          text        primary key check (key like 'account:%' or key like 'address:%'),
    failures     integer     not null check (failures > 0),
    last_failure timestamptz not null default now()
);

create index login_failures_last_failure_idx on auth.login_failures (last_failure);
