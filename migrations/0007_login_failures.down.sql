-- Back to no shared count: the table holds only counts that expire on their own.
drop table auth.login_failures;
