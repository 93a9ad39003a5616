-- Signing keys rotate on a schedule, without restarting any replica: a key is
-- published from its creation, signs from sign_time, and is withdrawn (so
-- tokens it signed stop verifying) at retire_time. Every replica reloads the
-- keys periodically and signs with the newest key whose sign_time has come, so
-- a rotation sets sign_time far enough ahead for every replica and verifier to
-- know the key first, and retire_time far enough after that for the old key's
-- last tokens to expire. `auth-service rotate-signing-key` does both.
--
-- sealed: private_key is sealed with SIGNING_KEYS_SECRET (XChaCha20-Poly1305,
-- a 24-byte nonce then the ciphertext) rather than plain PKCS#8 DER.
alter table auth.signing_keys
    add column sign_time   timestamptz,
    add column retire_time timestamptz,
    add column sealed      boolean not null default false;

update auth.signing_keys set sign_time = create_time;

alter table auth.signing_keys
    alter column sign_time set not null,
    alter column sign_time set default now();
