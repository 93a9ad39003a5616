-- Back to signing with the newest key: retired keys are deleted first, since
-- without retire_time they would be trusted again. Sealed keys would be read
-- as plain DER, which they are not, so reverting refuses while there are any:
-- delete them first, knowing that tokens they signed stop verifying.
do $$
begin
    if exists (select from auth.signing_keys where sealed) then
        raise exception 'auth.signing_keys holds sealed keys; delete them first (tokens they signed will stop verifying)';
    end if;
end $$;
delete from auth.signing_keys where retire_time <= now();
alter table auth.signing_keys
    drop column sealed,
    drop column retire_time,
    drop column sign_time;
