
# The drop guard on a server WITHOUT shared_preload_libraries, in sessions
# that never loaded secretenv: DROP EXTENSION, DROP SCHEMA ... CASCADE and
# DROP OWNED BY the owner are refused (2BP01, the hint names the setting)
# while secretenv.secrets holds rows, also under session_replication_role =
# replica; a role that may not drop gets PostgreSQL's own error and no
# count; a secret committed while the DROP waits for its lock is seen; the
# setting given by a superuser at connection time (before the library is
# loaded) lets the drop through; an empty table needs no setting.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;
use Test::More;

my $node = new_secretenv_node('no_preload', preload => 0,
	conf => kek_command_settings('drop-guard-passphrase-0123456789abcdef', 1));
$node->start;
my $superuser = $node->safe_psql('postgres', 'SELECT current_user');
$node->safe_psql(
	'postgres', q{
CREATE EXTENSION secretenv;
SELECT secretenv.secret_create('keep-' || i, 'keep-value-' || i) FROM generate_series(1, 3) i;
CREATE ROLE someone LOGIN;
});
is($node->safe_psql('postgres', q{SHOW shared_preload_libraries}), '', 'the server does not preload secretenv');

my $refused = qr/ERROR:  2BP01: cannot drop secretenv while secretenv\.secrets holds secrets\n(.*\n)*DETAIL:  3 stored secrets would be deleted\.\n(.*\n)*HINT:  .*SET secretenv\.allow_drop_with_secrets = on/;
my ($out, $err);
for my $case (
	[ 'DROP EXTENSION', 'DROP EXTENSION secretenv' ],
	[ 'DROP EXTENSION CASCADE', 'DROP EXTENSION secretenv CASCADE' ],
	[ 'DROP SCHEMA CASCADE', 'DROP SCHEMA secretenv CASCADE' ],
	[ 'DROP OWNED BY the owner', "DROP OWNED BY $superuser" ],
	[ 'DROP EXTENSION under session_replication_role = replica',
		'SET session_replication_role = replica; DROP EXTENSION secretenv CASCADE' ])
{
	# Each psql call is a new session that has not loaded the library.
	($out, $err) = run_sql($node, 'postgres', $case->[1]);
	like($err, $refused, "$case->[0]: refused with 2BP01, the count and the setting in the hint");
}
is($node->safe_psql('postgres', q{SELECT count(*) FROM secretenv.secrets}), '3', 'every secret is still there');

# A role that may not drop learns nothing from the guard.
($out, $err) = run_sql($node, 'postgres', 'DROP EXTENSION secretenv', extra_params => [ '-U', 'someone', '-v', 'VERBOSITY=verbose' ]);
like($err, qr/ERROR:  42501: must be owner of extension secretenv/, 'a non-owner gets the ownership error');
unlike($err, qr/stored secrets/, '... and no word about stored secrets');
# Before the library is loaded a SET only makes a placeholder; when the
# guard loads the library, a non-superuser's value is thrown away.
($out, $err) = run_sql($node, 'postgres', 'SET secretenv.allow_drop_with_secrets = on; DROP EXTENSION secretenv',
	extra_params => [ '-U', 'someone', '-v', 'VERBOSITY=verbose' ]);
like($err, qr/WARNING:  42501: permission denied to set parameter "secretenv\.allow_drop_with_secrets"/,
	'a non-superuser\'s secretenv.allow_drop_with_secrets is refused when the library loads');
like($err, qr/ERROR:  42501: must be owner of extension secretenv/, '... and the DROP fails on ownership');

# A secret committed while the DROP waits for the table's lock is counted.
$node->safe_psql('postgres', q{DELETE FROM secretenv.secrets});
my $writer = $node->background_psql('postgres');
$writer->query_safe(q{SET client_min_messages = error; BEGIN; SELECT secretenv.secret_create('late', 'committed-while-dropping')});
my $dropper = $node->background_psql('postgres', on_error_stop => 0,
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
$dropper->query_until(qr/started/, "\\echo started\nDROP EXTENSION secretenv;\n");
ok($node->poll_query_until('postgres',
		q{SELECT count(*) > 0 FROM pg_locks WHERE NOT granted AND relation = 'secretenv.secrets'::regclass}),
	'the DROP waits for the writer');
$writer->query_safe('COMMIT');
$dropper->query('SELECT 1');
like($dropper->{stderr}, qr/ERROR:  2BP01: .*\n(.*\n)*DETAIL:  1 stored secret would be deleted\./,
	'the secret committed meanwhile is seen, and the DROP refused');
$writer->quit;
$dropper->quit;
is($node->safe_psql('postgres', q{SELECT secretenv.secret_get('late')}), 'committed-while-dropping',
	'the late secret is there');

# Allowed by a superuser at connection time, before the library is loaded.
$node->safe_psql('postgres', q{CREATE DATABASE other; });
$node->safe_psql('other', q{CREATE EXTENSION secretenv; SELECT secretenv.secret_create('x', 'value-x');});
{
	local $ENV{PGOPTIONS} = '-c secretenv.allow_drop_with_secrets=on';
	($out, $err) = run_sql($node, 'other', 'DROP EXTENSION secretenv');
}
is($err =~ /ERROR/ ? $err : '', '', 'with the setting given at connection, DROP EXTENSION goes through');
is($node->safe_psql('other', q{SELECT count(*) FROM pg_extension WHERE extname = 'secretenv'}), '0',
	'... and the extension is gone');

# An empty table needs no setting.
$node->safe_psql('other', q{CREATE EXTENSION secretenv});
($out, $err) = run_sql($node, 'other', 'DROP SCHEMA secretenv CASCADE');
is($node->safe_psql('other', q{SELECT count(*) FROM pg_extension WHERE extname = 'secretenv'}), '0',
	'with no secret stored, DROP SCHEMA secretenv CASCADE goes through');

# The guard of one database does not look at another.
is($node->safe_psql('postgres', q{SELECT count(*) FROM secretenv.secrets}), '1', 'the first database still holds its secret');
unlike(slurp_file($node->logfile), qr/terminated by signal/, 'no crash');
$node->stop;
done_testing();
