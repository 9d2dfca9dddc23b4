# Copyright (c) secretenv contributors
#
# CALL secretenv.secret_rotate(batch_size) (issue 14, DESIGN §7d).
#
# 1. 1 000 000 secrets rotated by secret_rotate(10000) while a reader and a
#    writer run throughout: no read fails, no update is lost, every row ends
#    on the new KEK and decrypts to its value; a NOTICE per batch.
# 2. On a table of 100 000 secrets, a run stopped half way (a row held
#    locked mid-table) is killed: by kill -9 of its backend, then by an
#    immediate shutdown.  Every row is on the old or the new KEK and
#    decrypts; status() shows both; calling secret_rotate again finishes.
# 3. Two runs at once rotate every row exactly once between them.
#
# SECRETENV_ROTATION_ROWS overrides the size of the first table.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use LifecycleTest;
use SecretenvTest;
use Test::More;
use Time::HiRes qw(time);

my $big = $ENV{SECRETENV_ROTATION_ROWS} // 1000000;
my $small = 100000;

my $node = new_secretenv_node('batched_rotation',
	conf => "max_wal_size = 4GB\ncheckpoint_timeout = 30min\nrestart_after_crash = on\n");
$node->start;
set_keys($node, 1, 0);
$node->safe_psql('postgres', 'CREATE DATABASE big; CREATE DATABASE small;');
for my $db ('big', 'small')
{
	$node->safe_psql($db, 'CREATE EXTENSION secretenv');
}

# --- 1. A million rows, with a reader and a writer -------------------------
my $t0 = time;
generate_secrets($node, 'big', $big);
note sprintf('generated %d secrets in %.1f s', $big, time - $t0);

set_keys($node, 2, 1, db => 'big');

# The reader checks secret_get and secret_decrypt of rows the writer never
# touches; the writer updates 200 rows over and over.
my $load = start_load($node, 'big',
	rows => $big,
	prefix => 'name-',
	reads => [
		"v := secretenv.secret_get('name-' || i)",
		"SELECT secretenv.secret_decrypt(s.encrypted_value, s.wrapped_dek, s.kek_version, s.secret_id, s.secret_name)"
		  . " INTO v FROM secretenv.secrets s WHERE s.secret_name = 'name-' || i"
	],
	write => 'PERFORM secretenv.secret_update(w_name, w_value)');

$t0 = time;
my $main = start_sql($node, 'big', 'CALL secretenv.secret_rotate(10000)');
my ($rc, $out, $err) = finish_sql($main);
my $rotate_seconds = time - $t0;
my $counts = stop_load($load);
note sprintf('secret_rotate(10000) of %d rows took %.1f s', $big, $rotate_seconds);
note(($err =~ /(NOTICE:  finished: .*)/)[0] // 'no final NOTICE');

is($rc, 0, 'secret_rotate(10000) succeeded');
my @batches = $err =~ /NOTICE:  batch \d+: \d+ rows re-wrapped/g;
cmp_ok(scalar(@batches), '>=', $big / 10000 / 2, 'a NOTICE per batch');
cmp_ok(finished_count($err), '>', 0, 'the final NOTICE counts the rotated rows');
cmp_ok($counts->{reads}, '>', 0, "the reader read throughout ($counts->{reads} reads)");
is($counts->{failures}, '0', 'no read failed while the rotation ran');
cmp_ok($counts->{writes}, '>', 0, 'the writer wrote throughout');
is(secrets_state($node, 'big', 2, 'load_writes'), "$big|$big|$big",
	'every row is on the new KEK and decrypts to its value: no update was lost');
is($node->safe_psql('big', "SELECT secretenv.status()->>'rotation_complete'"), 'true',
	'status() says the rotation is complete');
$node->safe_psql('postgres', 'DROP DATABASE big');

# --- 2. Killed half way, then resumed ----------------------------------------
generate_secrets($node, 'small', $small);    # under KEK 2

for my $case ([ 'kill -9 of the backend', 3, 2 ], [ 'an immediate shutdown', 4, 3 ])
{
	my ($how, $new, $old) = @$case;
	set_keys($node, $new, $old, db => 'small');
	my $half = start_half_way($node, 'small', 'secretenv.secrets', 'CALL secretenv.secret_rotate%',
		sub { start_sql($node, 'small', 'CALL secretenv.secret_rotate(1000)') });

	# Half done: status() shows the progress, rows per version.
	my $progress = $node->safe_psql('small', q{
SELECT string_agg((v->>'kek_version') || ':' || (v->>'rows'), ',' ORDER BY v->>'kek_version')
FROM jsonb_array_elements(secretenv.status()->'versions') v});
	like($progress, qr/^$old:\d+,$new:\d+$/, "status() shows the run's progress ($progress)");

	interrupt_half_way($node, 'small', $half, $how);
	check_resumed_run($how, $small, sub { secrets_state($node, 'small', $new) },
		sub { start_sql($node, 'small', 'CALL secretenv.secret_rotate(1000)') });
}

# --- 3. Two runs at once ------------------------------------------------------
set_keys($node, 5, 4, db => 'small');
check_concurrent_runs($small, sub { secrets_state($node, 'small', 5) },
	sub { start_sql($node, 'small', 'CALL secretenv.secret_rotate(2000)') });

$node->stop;
done_testing();
