
# A real client: test/reliability/client.py (Debian's python3-psycopg2)
# stores, lists (masked), reads, updates and rotates secrets with query
# parameters only, on a server that logs every statement, its duration and
# its bind parameters.  Extended-protocol bind parameters, which psycopg2
# cannot send, are exercised with pgbench -M extended.  Afterwards the whole
# server log must contain none of the plaintexts and no passphrase, while an
# unrelated statement is still logged verbatim.

use strict;
use warnings;

use File::Basename qw(dirname);
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;
use Time::HiRes qw(time);

my $t0 = time;
my $python = '/usr/bin/python3';
my $client = dirname(__FILE__) . '/../reliability/client.py';
plan skip_all => "$python with psycopg2 is not available"
  unless -x $python && system($python, '-c', 'import psycopg2') == 0;

my $pass1 = 'python-client-passphrase-v1-' . token(16);
my $pass2 = 'python-client-passphrase-v2-' . token(16);

# A random string over letters that hex, timestamps and log text rarely use.
sub token
{
	my ($n) = @_;
	my @alphabet = ('g' .. 'z', 'G' .. 'Z');
	return join('', map { $alphabet[ int(rand(@alphabet)) ] } 1 .. $n);
}

my $node = new_secretenv_node('pyclient', conf => qq{
secretenv.kek_passphrase = '$pass1'
secretenv.kek_version = 1
log_statement = 'all'
log_min_duration_statement = 0
log_parameter_max_length = -1
log_parameter_max_length_on_error = -1
log_min_error_statement = error
log_error_verbosity = verbose
});
$node->start;
$node->safe_psql(
	'postgres', q{
CREATE EXTENSION secretenv;
CREATE ROLE app_client LOGIN IN ROLE secretenv_reader, secretenv_writer;
CREATE ROLE ops_client LOGIN IN ROLE secretenv_admin;
});

# The secrets: every value carries a unique random core, searched for in the
# log (so a partial leak is caught too).
my (@secrets, @updates, %cores);
sub core
{
	my ($label, $n) = @_;
	my $c = token($n // 20);
	$cores{$label} = $c;
	return $c;
}
push @secrets,
  { name => 'py-api-key',  value => 'sk-live-' . core('api-key') },
  { name => 'py-short',    value => core('short', 7) },
  { name => 'py-unicode',  value => "\x{43f}\x{430}\x{440}\x{43e}\x{43b}\x{44c}-" . core('unicode') . "-\x{5bc6}\x{7801}\x{1f511}" },
  { name => 'py-quote',    value => "O'Reilly-" . core('quote') . q{-"dq"-;--} },
  { name => 'py-backslash', value => 'back\\slash-' . core('backslash') . '\\n$1' },
  { name => 'py-long',     value => core('long') . ('A' x 4000) . core('long-tail') },
  { name => 'py-json', json => 1,
	value => { api_key => 'ak-' . core('json-key'), region => 'eu-west-1', n => 3 } },
  { name => 'py-colon',    value => 'user-' . core('colon') . ': pass-' . core('colon-tail') },
  { name => 'py-empty',    value => '' };
$_->{provider} = 'provider-x' for @secrets;
$_->{description} = "described $_->{name}" for @secrets;
push @updates,
  { name => 'py-api-key', value => 'sk-live-rotated-' . core('api-key-2') },
  { name => 'py-quote',   value => "it's-" . core('quote-2') },
  { name => 'py-json', json => 1,
	value => { api_key => 'ak2-' . core('json-key-2'), extra => [ 1, 2 ] } };
my %failing = (
	duplicate_value => 'dup-' . core('duplicate'),
	bad_json_name   => 'py-bad-json',
	bad_json_text   => '{"k": "' . core('bad-json') . '", ');

my $tmp = PostgreSQL::Test::Utils::tempdir;
my $json = JSON::PP->new->utf8->canonical;
open my $fh, '>', "$tmp/input.json" or die $!;
print $fh $json->encode({ secrets => \@secrets, updates => \@updates, failing => \%failing });
close $fh;

sub run_client
{
	my ($phase) = @_;
	my ($out, $err) = ('', '');
	local $ENV{PGHOST} = $node->host;
	local $ENV{PGPORT} = $node->port;
	local $ENV{PGDATABASE} = 'postgres';
	local $ENV{SECRETENV_APP_USER} = 'app_client';
	local $ENV{SECRETENV_ADMIN_USER} = 'ops_client';
	my $ok = IPC::Run::run([ $python, $client, $phase, "$tmp/input.json" ],
		'>', \$out, '2>', \$err);
	ok($ok, "client.py $phase exits 0") or diag($err);
	return $json->decode($out || '{}');
}

# The display mask, by characters.
sub mask
{
	my ($v) = @_;
	return length($v) < 8 ? '***' : substr($v, 0, 3) . '...' . substr($v, -4);
}

sub expected_mask
{
	my ($s) = @_;
	return mask($s->{value}) unless $s->{json};
	return {
		map {
			my $x = $s->{value}{$_};
			($_ => (ref $x ? '***' : mask_json_scalar($x)))
		} keys %{ $s->{value} }
	};
}

sub mask_json_scalar
{
	my ($x) = @_;
	# a JSON number is not a string: "***"
	return '***' if JSON::PP->new->allow_nonref->encode($x) !~ /^"/;
	return mask($x);
}

###########################################################################
# Store, list, read, update.
my $r = run_client('store');
is(scalar(keys %{ $r->{created} // {} }), scalar(@secrets), 'client created every secret');
is($r->{marker}, 'harmless-marker-123', 'client ran the unrelated statement');
is($r->{errors}{duplicate}, '23505', 'a duplicate secret_create fails with 23505');
is($r->{errors}{bad_json}, '22P02', 'a malformed JSON secret fails with 22P02');

my %masked = map { $_ => $r->{masked}{$_}{masked} } keys %{ $r->{masked} // {} };
is_deeply(\%masked, { map { ($_->{name} => expected_mask($_)) } @secrets },
	'masked_secrets shows the documented mask of every secret, nothing more');
is_deeply($r->{values}, { map { ($_->{name} => $_->{value}) } @secrets },
	'secret_get returns every value exactly');
my %latest = map { ($_->{name} => $_) } @secrets, @updates;
is_deeply($r->{values_after_update}, { map { ($_ => $latest{$_}{value}) } keys %latest },
	'secret_get returns every updated value');
is_deeply({ map { $_ => $r->{masked_after_update}{$_}{masked} } keys %{ $r->{masked_after_update} } },
	{ map { ($_ => expected_mask($latest{$_})) } keys %latest },
	'masked_secrets shows the masks of the updated values');
my $statements = $r->{statements} // 0;

###########################################################################
# Extended-protocol bind parameters, which psycopg2 does not use.
my $ext_value = 'ext-bind-' . core('extended') . "-'quoted'";
my $ext_value2 = 'ext-bind-updated-' . core('extended-2');
open my $sfh, '>', "$tmp/extended.sql" or die $!;
print $sfh "SELECT secretenv.secret_create(:name, :value::text);\n";
print $sfh "SELECT secretenv.secret_update(:name, :value2::text);\n";
print $sfh "SELECT secretenv.secret_encrypt(:value::text, :name, :name);\n";
close $sfh;
$node->command_ok(
	[
		'pgbench', '-n', '-M', 'extended', '-t', '1', '-c', '1',
		'-D', 'name=py-extended', '-D', "value=$ext_value", '-D', "value2=$ext_value2",
		'-f', "$tmp/extended.sql", '-d', $node->connstr('postgres')
	],
	'pgbench -M extended: secret_create, secret_update and secret_encrypt with bind parameters');
is($node->safe_psql('postgres', q{SELECT secretenv.secret_get('py-extended')}), $ext_value2,
	'the secret stored through bind parameters reads back');
$statements += 3;

###########################################################################
# Rotation: the Perl side changes the key configuration, the client rotates.
ok(configure_rotation_keys($node, $pass2, $pass1),
	'server reloaded: current KEK version 2, previous 1');

# Every envelope is rotated: the secrets' current values and the versions
# their updates kept.
my $nrows = $node->safe_psql('postgres', q{SELECT (SELECT count(*) FROM secretenv.secrets)
	+ (SELECT count(*) FROM secretenv.secret_versions)});
cmp_ok($nrows, '>', scalar(@secrets), 'the updates kept versions beside the current values');
$r = run_client('rotate');
is($r->{rotated}, $nrows, "client rotation re-wraps all $nrows envelopes");
is($r->{rotated_again}, 0, 'a second rotation has nothing to do');
is($r->{verify_failures}, 0, 'verify_secrets() finds no failing row');
is($r->{status_after}{rotation_complete}, JSON::PP::true, 'status() reports the rotation complete');
is_deeply($r->{values}, { map { ($_ => $latest{$_}{value}) } keys %latest },
	'every secret reads back after the rotation');
is_deeply([ sort map { $r->{masked}{$_}{kek_version} } keys %{ $r->{masked} } ],
	[ (2) x (scalar(@secrets) + 1) ], 'masked_secrets shows every secret at KEK version 2');
$statements += $r->{statements} // 0;

###########################################################################
# The server log.
my $log = slurp_file($node->logfile);
my @lines = split /\n/, $log;

like($log, qr/statement: SELECT 'harmless-marker-123'/,
	'an unrelated statement is logged verbatim');
my $redacted = () = $log =~ /\[secretenv: redacted\]/g;
cmp_ok($redacted, '>=', scalar(@secrets) + scalar(@updates),
	'the redaction marker stands in for the plaintext statements');
like($log, qr/ERROR:  23505: secret "[^"]+" already exists/, 'the duplicate-name error itself is logged');

# Every plaintext, its unique core, and both passphrases: zero occurrences.
my %needles = (
	(map { ("core $_" => $cores{$_}) } keys %cores),
	(map { ("value of $_->{name}" => $_->{value}) } grep { !$_->{json} && length $_->{value} } @secrets, @updates),
	'extended value'   => $ext_value,
	'passphrase v1'    => $pass1,
	'passphrase v2'    => $pass2);
my %leaks;
my $occurrences = 0;
for my $label (sort keys %needles)
{
	my $needle = $needles{$label};
	utf8::encode($needle) if utf8::is_utf8($needle);
	my $n = () = $log =~ /\Q$needle\E/g;
	next unless $n;
	$occurrences += $n;
	$leaks{$label} = [ map { length($_) > 200 ? substr($_, 0, 200) . '...' : $_ } grep { index($_, $needle) >= 0 } @lines ];
}
is($occurrences, 0, 'no plaintext or passphrase occurs anywhere in the server log');
is_deeply(\%leaks, {}, 'no leaking log line') or diag(explain(\%leaks));

diag(sprintf('python client: %d statements (%d secrets, %d updates, 1 rotation, 3 bind-parameter statements)',
	$statements, scalar(@secrets), scalar(@updates)));
diag(sprintf('server log: %d lines, %d bytes read; %d needles searched, %d occurrences; %d redaction markers; %.0f s',
	scalar(@lines), length($log), scalar(keys %needles), $occurrences, $redacted, time - $t0));

$node->stop;
done_testing();
