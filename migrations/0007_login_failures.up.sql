-- Failed logins per account, shared by every auth-service replica: counted in
-- one process each, N replicas behind a load balancer would give an attacker N
-- times the allowance. Keyed by the account's email key (`auth.email_key`), the
-- same for every spelling of it, registered or not, so the count says nothing
-- about which emails exist.
--
-- Unlogged: a failed login writes no WAL, and a crash of the database forgets
-- the counts, which gives an attacker one fresh allowance and nothing more.
-- auth-service purges windows that have ended every ten minutes.
create unlogged table auth.login_failures (
    key          text        primary key,
    failures     integer     not null check (failures > 0),
    window_start timestamptz not null default now()
);

create index login_failures_window_start_idx on auth.login_failures (window_start);
