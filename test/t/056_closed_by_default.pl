
# Copyright (c) secretenv contributors
#
# Closed by default (DESIGN §8a, issue 22): no development key by accident,
# no passphrase that every role could read, and a reload that re-runs the
# passphrase command.
#
#  - a misspelt key setting (secretenv.kek_passphrase_comand): PostgreSQL 15
#    drops the name when secretenv reserves its prefix (a WARNING in the
#    log at start with preload, to the client at load without; a reload
#    reports an error in the file and applies the rest); secret_create, secret_encrypt, secret_update, decrypts, rewrap,
#    rotation, check_envelope and verify_secrets() fail with 22S04 and a
#    HINT naming the settings to configure; no row is stored; status() says
#    "not configured";
#  - secretenv.allow_development_passphrase = on: MLflow's rows written
#    without a passphrase (the vectors' development-passphrase rows) read;
#    status() says so; off again: refused (22S04);
#  - no shared_preload_libraries and a passphrase written in the
#    configuration (current or previous): a WARNING at load naming the
#    setting, then every use refused with 55000 naming the two fixes; no
#    row stored;
#  - no shared_preload_libraries and the passphrase command: works;
#  - with and without preload, a reload re-runs the command: an open
#    session and new connections follow the command's output (a wrong
#    passphrase, then the right one again: "restore and reload" works);
#    a reload that changes nothing costs no PBKDF2 run; with preload an
#    open session takes the KEKs the postmaster published (issue 26) and
#    neither runs the command nor PBKDF2;
#  - the open session follows at once: after a reload, its status() (which
#    waits until the postmaster has handled the reload, key_freshness.c)
#    and its next read act on the new output, 10 wrong/right rounds in a
#    row (from PostgreSQL 16, with preload, /proc alone let the session
#    act on the old output in about 4 rounds out of 10).
use strict;
use warnings;

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;

my $DEV_PASSPHRASE = 'mlflow-default-kek-passphrase-for-development-only';
my $MLFLOW_SALT = 'mlflow-secrets-kek-v1-2025';
my $tmp = PostgreSQL::Test::Utils::tempdir;

# stdout of SQL in a new connection; an error gives what ran before it, so
# that each check fails on its own rather than ending the test.
sub psql_out
{
	my ($node, $sql) = @_;
	my ($out) = run_sql($node, 'postgres', $sql);
	return $out;
}

# --- MLflow's rows written under no passphrase (the development one) -------
my $vector_dir = $ENV{SECRETENV_VECTORS} || 'test/vectors/mlflow';
my $json = JSON::PP->new->utf8;
sub vectors
{
	my ($file) = @_;
	return @{ $json->decode(slurp_file("$vector_dir/$file"))->{cases} };
}
my @dev_rows;
for my $c (vectors('secrets.json'))
{
	next unless $c->{passphrase} eq '' || $c->{passphrase} eq $DEV_PASSPHRASE;
	push @dev_rows, [ @$c{qw(secret_id secret_name encrypted_value_hex wrapped_dek_hex kek_version plaintext_utf8_hex)} ];
}
for my $c (vectors('rotation.json'))
{
	next unless $c->{old_passphrase} eq '' || $c->{old_passphrase} eq $DEV_PASSPHRASE;
	push @dev_rows, [ @$c{qw(secret_id secret_name encrypted_value_hex wrapped_dek_hex_before old_version plaintext_utf8_hex)} ];
}
# One KEK version at a time: the rows of the lowest version.
my ($dev_version) = sort { $a <=> $b } map { $_->[4] } @dev_rows;
@dev_rows = grep { $_->[4] == $dev_version } @dev_rows;
ok(scalar(@dev_rows) >= 1, 'the vectors hold MLflow rows written under the development passphrase');

my $insert_dev_rows = 'INSERT INTO secretenv.secrets (secret_id, secret_name, encrypted_value, wrapped_dek, kek_version) VALUES '
  . join(', ', map { "('$_->[0]', " . sql_string($_->[1]) . ", decode('$_->[2]', 'hex'), decode('$_->[3]', 'hex'), $_->[4])" } @dev_rows);
my $expected_dev = join("\n", map { "$_->[1]|$_->[5]" } sort { $a->[1] cmp $b->[1] } @dev_rows);
my $read_dev = q{SELECT secret_name || '|' || encode(convert_to(value, 'UTF8'), 'hex')
	FROM secretenv.decrypted_secrets ORDER BY secret_name};

# --- A misspelt setting, preloaded ------------------------------------------
my $typo = new_secretenv_node('typo',
	conf => "secretenv.kek_passphrase_comand = 'echo a-passphrase-that-is-never-used-0123456789'\n"
	  . "secretenv.kek_salt = '$MLFLOW_SALT'\nsecretenv.kek_version = $dev_version\n");
$typo->start;
psql_out($typo, 'CREATE EXTENSION secretenv; CREATE ROLE w; GRANT secretenv_writer TO w');

like(slurp_file($typo->logfile),
	qr/WARNING:  invalid configuration parameter name "secretenv\.kek_passphrase_comand", removing it/,
	'misspelt setting: PostgreSQL 15 removes it when secretenv reserves its prefix, with a WARNING');

my $hint_none = qr/HINT:  Set secretenv\.kek_passphrase_command \(or secretenv\.kek_passphrase, with secretenv in shared_preload_libraries\) in postgresql\.conf and reload; check the spelling of every secretenv setting there\. For a development store only, set secretenv\.allow_development_passphrase = on\./;
my %refused = (
	'secret_create' => "SELECT secretenv.secret_create('openai-prod', 'sk-typo-0123456789')",
	'secret_create jsonb' => q{SELECT secretenv.secret_create('aws-prod', '{"k": "v-typo"}'::jsonb)},
	'secret_encrypt' => "SELECT secretenv.secret_encrypt('sk-typo', gen_random_uuid(), 'n')",
	'secret_rewrap' => "SELECT secretenv.secret_rewrap(decode(repeat('00', 60), 'hex'), $dev_version)",
	'secret_decrypt' => "SELECT secretenv.secret_decrypt(decode(repeat('00', 40), 'hex'), decode(repeat('00', 60), 'hex'), $dev_version, gen_random_uuid(), 'n')",
	'INSERT by a writer (check_envelope)' => "SET ROLE w; $insert_dev_rows");
for my $label (sort keys %refused)
{
	my (undef, $err) = run_sql($typo, 'postgres', $refused{$label});
	like($err, qr/ERROR:  22S04: no KEK is configured for version $dev_version\n/, "misspelt setting: $label fails with 22S04");
	like($err, $hint_none, "misspelt setting: $label has the HINT naming the settings");
}
is(psql_out($typo, 'SELECT count(*) FROM secretenv.secrets'), '0',
	'misspelt setting: no row stored');
is( psql_out($typo, q{SELECT s->>'key_source', s->>'using_default_passphrase',
	s->>'allow_development_passphrase', s->>'kek_fingerprints' FROM secretenv.status() s}),
	"not configured|false|false|{\"$dev_version\": null}",
	'misspelt setting: status() says the version is not configured');

# The development passphrase, allowed by a superuser for this store.
my $log_offset = -s $typo->logfile;
reload_generation($typo, "secretenv.allow_development_passphrase = on\n", 1);
# (secretenv's log redaction hides that line's text: it is about a
# secretenv.* setting, whose value it might quote.)
like(substr(slurp_file($typo->logfile), $log_offset),
	qr/configuration file "[^"]*" contains errors; unaffected changes were applied/,
	'misspelt setting: a reload logs an error in the file, and applies the other settings');
is(psql_out($typo, "SET ROLE w; $insert_dev_rows; RESET ROLE; SELECT count(*) FROM secretenv.secrets"),
	scalar(@dev_rows), 'allow_development_passphrase = on: MLflow rows pass check_envelope');
is(psql_out($typo, $read_dev), $expected_dev,
	"allow_development_passphrase = on: MLflow's unconfigured rows decrypt to their plaintexts");
is(psql_out($typo, "SELECT encode(convert_to(secretenv.secret_get('$dev_rows[0][1]'), 'UTF8'), 'hex')"),
	$dev_rows[0][5], 'allow_development_passphrase = on: secret_get reads an MLflow row');
is( psql_out($typo, q{SELECT s->>'key_source', s->>'using_default_passphrase',
	s->>'allow_development_passphrase' FROM secretenv.status() s}),
	'development passphrase|true|true', 'allow_development_passphrase = on: status() says so');
my ($out, $err) = run_sql($typo, 'postgres', 'SELECT count(*) FROM secretenv.verify_secrets()');
is($out, '0', 'allow_development_passphrase = on: verify_secrets() finds every row opening');

reload_generation($typo, "secretenv.allow_development_passphrase = off\n", 2);
($out, $err) = run_sql($typo, 'postgres', $read_dev);
like($err, qr/ERROR:  22S04: no KEK is configured for version $dev_version\n/, 'off again: decrypted_secrets refused with 22S04');
like($err, $hint_none, 'off again: with the HINT');
(undef, $err) = run_sql($typo, 'postgres', "SELECT secretenv.secret_get('$dev_rows[0][1]')");
like($err, qr/ERROR:  22S04:/, 'off again: secret_get refused with 22S04');
(undef, $err) = run_sql($typo, 'postgres', "SELECT secretenv.secret_update('$dev_rows[0][1]', 'new-value')");
like($err, qr/ERROR:  22S04:/, 'off again: secret_update refused with 22S04');
(undef, $err) = run_sql($typo, 'postgres', 'SELECT * FROM secretenv.verify_secrets()');
like($err, qr/ERROR:  22S04:/, 'off again: verify_secrets() refused with 22S04');
reload_generation($typo, 'secretenv.kek_version = ' . ($dev_version + 1)
	  . "\nsecretenv.kek_previous_version = $dev_version\n", 3);
(undef, $err) = run_sql($typo, 'postgres', 'SELECT secretenv.secret_rotate_all()');
like($err, qr/ERROR:  22S04: .*no KEK is configured for version $dev_version\n/, 'off again: secret_rotate_all to a new version refused with 22S04');
like($err, qr/HINT:  .*secretenv\.kek_previous_passphrase/,
	'off again: the HINT of a previous version names secretenv.kek_previous_passphrase');
is(psql_out($typo, "SELECT count(*) FROM secretenv.secrets WHERE kek_version = $dev_version"),
	scalar(@dev_rows), 'off again: rotation changed no row');
$typo->stop;

# --- A misspelt setting, not preloaded --------------------------------------
my $typo_lazy = new_secretenv_node('typo_lazy', preload => 0,
	conf => "secretenv.kek_passphrase_comand = 'echo a-passphrase-that-is-never-used-0123456789'\n");
$typo_lazy->start;
(undef, $err) = run_sql($typo_lazy, 'postgres', 'CREATE EXTENSION secretenv');
like($err, qr/WARNING:  42602: invalid configuration parameter name "secretenv\.kek_passphrase_comand", removing it/,
	'misspelt setting, no preload: removed with a WARNING when the library loads');
(undef, $err) = run_sql($typo_lazy, 'postgres', "SELECT secretenv.secret_create('openai-prod', 'sk-typo-0123456789')");
like($err, qr/ERROR:  22S04: no KEK is configured for version 1\n/, 'misspelt setting, no preload: secret_create fails with 22S04');
like($err, $hint_none, 'misspelt setting, no preload: with the HINT naming the settings');
is(psql_out($typo_lazy, 'SELECT count(*) FROM secretenv.secrets'), '0', 'misspelt setting, no preload: no row stored');
$typo_lazy->stop;

# --- No preload: a passphrase written in the configuration ------------------
my $written = new_secretenv_node('written', preload => 0,
	conf => kek_settings('written-passphrase-readable-by-all-0123456789', 2,
		'written-previous-passphrase-readable-by-all-01234', 1));
$written->start;
(undef, $err) = run_sql($written, 'postgres', 'CREATE EXTENSION secretenv');
for my $setting ('kek_passphrase', 'kek_previous_passphrase')
{
	like($err, qr/WARNING:  01000: secretenv\.$setting was readable by every role until secretenv was loaded/,
		"no preload: a WARNING at load names secretenv.$setting");
}
for my $case ([ 'secret_create', "SELECT secretenv.secret_create('w', 'sk-written')", 2, 'kek_passphrase' ],
	[ 'secret_rewrap of version 1', "SELECT secretenv.secret_rewrap(decode(repeat('00', 60), 'hex'), 1)", 1, 'kek_previous_passphrase' ])
{
	my ($label, $sql, $v, $setting) = @$case;
	(undef, $err) = run_sql($written, 'postgres', $sql);
	like($err, qr/ERROR:  55000: refusing the KEK passphrase of version $v written in the configuration\n/,
		"no preload, written passphrase: $label fails with 55000");
	like($err, qr/DETAIL:  secretenv is not in shared_preload_libraries, so secretenv\.$setting was readable by every role until the library was loaded\./,
		"no preload, written passphrase: $label says why");
	like($err, qr/HINT:  Add secretenv to shared_preload_libraries and restart the server, or replace secretenv\.$setting with secretenv\.kek_passphrase_command and reload\./,
		"no preload, written passphrase: $label names the two fixes");
}
is(psql_out($written, q{SELECT count(*) FROM secretenv.secrets}), '0',
	'no preload, written passphrase: no row stored');
is(psql_out($written, q{SELECT s->>'key_source', s->>'previous_key_source' FROM secretenv.status() s}),
	'passphrase refused without preload|passphrase refused without preload',
	'no preload, written passphrase: status() says the passphrases are refused');
$written->stop;

# --- The passphrase command, re-run by every reload -------------------------
my %pass = (
	right => 'RIGHT-passphrase-of-the-command-0123456789-abcdef',
	wrong => 'WRONG-passphrase-of-the-command-0123456789-abcdef');

for my $preload (1, 0)
{
	my $what = $preload ? 'preload' : 'no preload';
	my $passfile = "$tmp/pass_$preload";
	my $runs = "$tmp/runs_$preload";
	my $cmd = write_script($tmp, "kek_$preload.sh", qq{echo "\$1" >> '$runs'\ncat '$passfile'});
	my $set = sub { open my $fh, '>', $passfile or die $!; print $fh "$_[0]\n"; close $fh; };
	my $nruns = sub { -e $runs ? scalar(() = slurp_file($runs) =~ /\n/g) : 0 };
	$set->($pass{right});

	my $node = new_secretenv_node("command_$preload", preload => $preload,
		conf => "secretenv.kek_passphrase_command = '$cmd %v'\n");
	$node->start;
	$node->safe_psql('postgres', q{CREATE EXTENSION secretenv;
		SELECT secretenv.secret_create('cmd-secret', 'value-under-the-command')});
	is(psql_out($node, "SELECT secretenv.secret_get('cmd-secret')"),
		'value-under-the-command', "$what: the passphrase command works");

	my $s = $node->background_psql('postgres', on_error_stop => 0);
	my $derivations = q{SELECT secretenv.key_config()->>'kek_derivations_in_this_process'};
	is(session_query($s, "SELECT secretenv.secret_get('cmd-secret')"), 'value-under-the-command',
		"$what: an open session reads");
	my $d0 = session_query($s, $derivations);
	is($d0, $preload ? '0' : '1', "$what: the open session derived " . ($preload ? 'no KEK' : 'one KEK'));

	# A reload that changes nothing: the command runs again, no PBKDF2.
	my $before = $nruns->();
	$node->reload;
	session_query($s, 'SELECT secretenv.status()');
	is(session_query($s, "SELECT secretenv.secret_get('cmd-secret')"), 'value-under-the-command',
		"$what, unchanged reload: the open session still reads");
	is($nruns->() - $before, 1, "$what, unchanged reload: the command ran again, once: "
		  . ($preload ? 'in the postmaster (no backend runs it when its output did not change)' : 'in the open session'));
	is(session_query($s, $derivations), $d0, "$what, unchanged reload: no PBKDF2 in the open session");

	# The command now prints a wrong passphrase.
	$set->($pass{wrong});
	$node->reload;
	session_query($s, 'SELECT secretenv.status()');
	my ($o, $e) = session_query($s, "SELECT secretenv.secret_get('cmd-secret')");
	like($e, qr/ERROR:  .*wrong KEK or corrupted wrapped DEK/,
		"$what, wrong output and reload: the open session follows the command (22S02)");
	(undef, $e) = run_sql($node, 'postgres', "SELECT secretenv.secret_create('cmd-other', 'x')");
	like($e, qr/ERROR:  22S02: refusing to encrypt under the KEK of version 1/,
		"$what, wrong output and reload: a new connection refuses to encrypt");
	like($e, qr/HINT:  Restore the passphrase and salt that wrote the existing rows and reload\./,
		"$what, wrong output and reload: the HINT says restore and reload");

	# Restore what the command prints and reload: the remedy works.
	$before = $nruns->();
	$set->($pass{right});
	$node->reload;
	session_query($s, 'SELECT secretenv.status()');
	is(session_query($s, "SELECT secretenv.secret_get('cmd-secret')"), 'value-under-the-command',
		"$what, restored and reloaded: the open session reads again");
	is(session_query($s, $derivations), $preload ? $d0 : $d0 + 2,
		"$what, restored and reloaded: the open session derived "
		  . ($preload ? 'nothing (it took the KEKs the postmaster published, issue 26)' : 'once per changed output'));
	is($nruns->() - $before, 1, "$what, restored and reloaded: the command ran once, "
		  . ($preload ? 'in the postmaster' : 'in the open session'));
	(undef, $e) = run_sql($node, 'postgres', "SELECT secretenv.secret_create('cmd-other', 'x')");
	is($e, '', "$what, restored and reloaded: a new connection writes again");

	my @stale;
	for my $round (1 .. 10)
	{
		$set->($pass{wrong});
		$node->reload;
		session_query($s, 'SELECT secretenv.status()');
		(undef, $e) = session_query($s, "SELECT secretenv.secret_get('cmd-secret')");
		push @stale, "wrong $round" unless $e =~ /wrong KEK or corrupted wrapped DEK/;
		$set->($pass{right});
		$node->reload;
		session_query($s, 'SELECT secretenv.status()');
		push @stale, "right $round"
		  unless session_query($s, "SELECT secretenv.secret_get('cmd-secret')") eq 'value-under-the-command';
	}
	is(join(', ', @stale), '', "$what, 10 wrong/right rounds: after each reload and status() the open session "
		  . 'reads with the new output at once');
	$s->quit;
	$node->stop;
}

done_testing();
