
# Copyright (c) secretenv contributors
#
# Access audit on a hot standby and without preload (DESIGN §8b): the
# table cannot be written on a standby, so a read there is recorded as a
# LOG_SERVER_ONLY line of the standby's log (seq=-), written before the
# value is returned, also in strict mode; the primary's chain is
# untouched by it (and its own records replicate to the standby, where
# audit_verify() checks them). A database still on 1.1 records reads in
# the log until its extension is updated (also in a session opened before
# the update). Without shared_preload_libraries there is no
# queue: a non-strict read is recorded in the log, a strict read fails
# with 55S02 and returns nothing.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SecretenvTest;
use Test::More;

my $value = 'standby-audit-value-0123456789';
my $keys = kek_settings('audit-standby-test-passphrase-0123456789', 1);
my $primary = new_secretenv_node('audit_primary', allows_streaming => 1, conf => $keys);
$primary->start;
$primary->safe_psql('postgres', qq{
CREATE EXTENSION secretenv;
CREATE ROLE app LOGIN IN ROLE secretenv_reader;
SELECT secretenv.secret_create('replicated', '$value');
SELECT secretenv.secret_get('replicated');
});
$primary->poll_query_until('postgres', 'SELECT count(*) = 2 FROM secretenv.audit_log') or die;
$primary->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('audit_standby');
$standby->init_from_backup($primary, 'b', has_streaming => 1);
$standby->start;
$primary->wait_for_catchup($standby);

my $offset = -s $standby->logfile;
is($standby->safe_psql('postgres', q{SELECT secretenv.secret_get('replicated')},
	extra_params => [ '-U', 'app' ]), $value, 'standby: the read returns the value');
my $log = slurp_file($standby->logfile, $offset);
like($log, qr/LOG:  secretenv audit: seq=- time="[^"]+" database="postgres" session_user="app" current_user="app" operation=read via=secret_get outcome=ok secret_id=[0-9a-f-]{36} secret_name="replicated" application_name="[^"]*" client_addr="" pid=\d+ version=(?:1|-) kek_version=- mac=-/,
	'standby: the read is recorded in the standby\'s log');
is($standby->safe_psql('postgres', q{SELECT secretenv.audit_stats()->>'log_only'}), '1',
	'standby: counted as a log-only record');

$standby->append_conf('postgresql.conf', "secretenv.audit_strict = on\n");
$standby->reload;
$standby->poll_query_until('postgres', q{SELECT current_setting('secretenv.audit_strict') = 'on'}) or die;
$offset = -s $standby->logfile;
is($standby->safe_psql('postgres', q{SELECT secretenv.secret_get('replicated')},
	extra_params => [ '-U', 'app' ]), $value, 'standby, strict: the read returns once its line is written');
like(slurp_file($standby->logfile, $offset), qr/secretenv audit: seq=- .* operation=read via=secret_get outcome=ok .*secret_name="replicated"/,
	'standby, strict: recorded in the log');
is($standby->safe_psql('postgres', q{SELECT concat_ws('|', intact, records) FROM secretenv.audit_verify()}),
	't|2', 'standby: the replicated chain verifies there');
is($primary->safe_psql('postgres', 'SELECT count(*) FROM secretenv.audit_log'), '2',
	'the primary\'s chain has no record of the standby\'s reads');
$standby->stop;

# A database still on 1.1 has no audit_log: its reads go to the log until
# ALTER EXTENSION ... UPDATE, and then to the table.
$primary->safe_psql('postgres', 'CREATE DATABASE old11');
$primary->safe_psql('old11', qq{
	CREATE EXTENSION secretenv VERSION '1.1';
	SELECT secretenv.secret_create('legacy', '$value');});
$offset = -s $primary->logfile;
# One session reads before and after another session's update: a backend
# that found no audit_log finds it once the update commits.
my $old = $primary->background_psql('old11');
is($old->query_safe(q{SELECT secretenv.secret_get('legacy')}), $value, '1.1 database: the read returns');
like(slurp_file($primary->logfile, $offset),
	qr/secretenv audit: seq=- time="[^"]+" database="old11" session_user="postgres" current_user="postgres" operation=read via=secret_get outcome=ok .*secret_name="legacy"/,
	'1.1 database: the read is recorded in the log');
$primary->safe_psql('old11', q{ALTER EXTENSION secretenv UPDATE TO '1.2'});
$old->query_safe(q{SELECT secretenv.secret_get('legacy')});
$old->quit;
$primary->poll_query_until('old11', q{SELECT count(*) = 1 FROM secretenv.audit_log WHERE secret_name = 'legacy'})
  or die 'no record after the update';
is($primary->safe_psql('old11', q{SELECT concat_ws(' ', operation, outcome, database_name) FROM secretenv.audit_log}),
	'read ok old11', 'updated to 1.2 by another session: the open session\'s next read is recorded in its table');
$primary->stop;

# --- without preload ---
# A written passphrase is refused without preload (DESIGN 8a): the key comes from a command.
my $plain = new_secretenv_node('audit_nopreload', preload => 0,
	conf => kek_command_settings('audit-standby-test-passphrase-0123456789', 1));
$plain->start;
$plain->safe_psql('postgres', qq{
CREATE EXTENSION secretenv;
CREATE ROLE app LOGIN IN ROLE secretenv_reader;
SELECT secretenv.secret_create('plain', '$value');
});
$offset = -s $plain->logfile;
is($plain->safe_psql('postgres', q{SELECT secretenv.secret_get('plain')}, extra_params => [ '-U', 'app' ]),
	$value, 'no preload: the read returns');
like(slurp_file($plain->logfile, $offset), qr/secretenv audit: seq=- .* operation=read via=secret_get outcome=ok .*secret_name="plain"/,
	'no preload: recorded in the log');
is($plain->safe_psql('postgres', 'SELECT count(*) FROM secretenv.audit_log'), '0',
	'no preload: nothing in the table');
$plain->append_conf('postgresql.conf', "secretenv.audit_strict = on\n");
$plain->reload;
$plain->poll_query_until('postgres', q{SELECT current_setting('secretenv.audit_strict') = 'on'}) or die;
my ($ret, $out, $err) = $plain->psql('postgres', q{SELECT secretenv.secret_get('plain')},
	extra_params => [ '-U', 'app' ]);
ok($out eq '' && $err =~ /ERROR:  could not record the read in the access audit\nDETAIL:  secretenv is not in shared_preload_libraries/,
	'no preload, strict: the read fails, no plaintext');
$plain->stop;
done_testing();
