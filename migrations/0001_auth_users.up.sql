-- auth-service's schema: registered users and the keys that sign their tokens.
create schema auth;

create table auth.users (
    id            uuid        primary key,
    -- stored as registered (trimmed); uniqueness ignores case, see the index below
    email         text        not null check (char_length(email) between 3 and 254),
    -- argon2id in PHC string form; never leaves auth-service
    password_hash text        not null,
    create_time   timestamptz not null default now()
);

-- Case-insensitive uniqueness; login looks users up through the same expression.
create unique index users_email_key on auth.users (lower(email));

-- Ed25519 signing keys (PKCS#8 DER) for deployments that do not supply a key file:
-- every auth-service replica and restart signs with the newest one, so tokens
-- already issued stay valid.
create table auth.signing_keys (
    kid         text        primary key,
    private_key bytea       not null,
    create_time timestamptz not null default now()
);
