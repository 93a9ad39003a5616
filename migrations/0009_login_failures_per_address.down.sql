-- Back to failures per account only, counted from the first in a window (0007's
-- shape). The counts are dropped: they expire on their own anyway.
drop table auth.login_failures;

create unlogged table auth.login_failures (
    key          text        primary key,
    failures     integer     not null check (failures > 0),
    window_start timestamptz not null default now()
);

create index login_failures_window_start_idx on auth.login_failures (window_start);
