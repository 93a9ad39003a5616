-- Passwords and emails seen through Unicode's look-alike forms (auth-service).

-- How each stored password hash was made: from the password as typed ('none', every
-- hash before this migration, and any row written without naming the column) or
-- from its NFKC form ('nfkc', what auth-service writes from now on). A login
-- checks the password in the form its hash was made from, once, and a successful
-- login with a 'none' hash rehashes the NFKC form in the background.
alter table auth.users
    add column password_normalization text not null default 'none'
        check (password_normalization in ('none', 'nfkc'));

-- The key an email is unique by and found by: NFKC, so compatibility look-alikes
-- (U+212A KELVIN SIGN, full-width letters, ligatures) are one email, then
-- upper then lower case, which folds case at least as far as Unicode case folding
-- does (ß and ss, final and medial sigma), then NFKC again. The case mappings use
-- ICU's root locale, not the database's: lower() under a libc locale maps only
-- what that locale knows (only ASCII under "C"), and the key must not depend on
-- how a database was created. ICU is required: without it this migration fails
-- (collation "und-x-icu" does not exist) instead of building a weaker index.
-- normalize() needs a UTF8 database.
create function auth.email_key(email text) returns text
    language sql immutable strict parallel safe
    return normalize(lower(upper(normalize(email, nfkc) collate "und-x-icu")), nfkc);

-- Look-alike accounts that already exist (registered before this migration under
-- emails with one key) are not merged or deleted, and this migration does not
-- fail on them: the oldest account of each such group (by create_time, then id)
-- keeps the key and is found by any spelling of it, as before. Every later one
-- is marked `email_lookalike` and from now on is found only by its email exactly
-- as stored, byte for byte. Nothing is lost (each keeps its password and data;
-- an operator can list them with `where email_lookalike`), and no new look-alike
-- of any of them can register, since its key belongs to the oldest.
alter table auth.users
    add column email_lookalike boolean not null default false;

update auth.users later
   set email_lookalike = true
 where exists (
         select 1
           from auth.users older
          where auth.email_key(older.email) = auth.email_key(later.email)
            and (older.create_time, older.id) < (later.create_time, later.id)
       );

-- The uniqueness, under the old index's name (auth-service maps a violation of
-- it to EMAIL_ALREADY_REGISTERED), and login's look-up by key.
drop index auth.users_email_key;
create unique index users_email_key on auth.users (auth.email_key(email))
    where not email_lookalike;

-- Login's look-up of a look-alike by its exact email.
create unique index users_lookalike_email_key on auth.users (email)
    where email_lookalike;
