drop index auth.users_lookalike_email_key;
drop index auth.users_email_key;
-- Back to case-insensitive uniqueness. This fails if two accounts registered since
-- 0006 differ only in letter case under the database's locale but not under
-- auth.email_key, which folds at least as much: in practice, never.
create unique index users_email_key on auth.users (lower(email));
alter table auth.users drop column email_lookalike;
drop function auth.email_key(text);
-- Hashes made from NFKC forms stay: they still verify for passwords typed in
-- that form (as most are), and the older code never normalises.
alter table auth.users drop column password_normalization;
