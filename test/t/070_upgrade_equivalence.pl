
# Copyright (c) secretenv contributors
#
# Upgrade equivalence (DESIGN §7, §8): in one preloaded UTF8 cluster,
# database "from10" installs secretenv 1.0 and database "from11" installs
# 1.1; each takes data (text and jsonb secrets through secret_create on KEK
# versions 1 and 2, application tables written with secret_encrypt) and is
# brought to the default version with ALTER EXTENSION secretenv UPDATE
# (1.0 through 1.1); database "fresh" installs the default version directly.
#  - The catalog snapshots of the two (catalog_snapshot in SecretenvTest.pm:
#    every member of the extension and every object of schema secretenv with
#    its properties, privileges, comments, triggers, policies, pg_dump
#    configuration) are identical; a difference is printed line by line.
#  - Every row of each upgraded database still decrypts to what was written,
#    through decrypted_secrets, secret_get and secret_decrypt on the
#    application table, its stored bytes untouched; it takes new writes.
# The snapshot lists no object by name, so an object added to the default
# version's install script but not to an upgrade script makes this fail.
#  - The default version's install script creates each function, procedure
#    and view once, in its final form: no signature of its CREATE [OR
#    REPLACE] FUNCTION, PROCEDURE or VIEW statements repeats, each names an
#    object of the fresh install (none is created and dropped again), and
#    together they are every function, procedure and view of schema
#    secretenv (so the parse below missed none).

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $pass1 = 'upgrade-equivalence-passphrase-v1-0123456789abcdef';
my $pass2 = 'upgrade-equivalence-passphrase-v2-fedcba9876543210';

my $node = new_secretenv_node('upgrade', conf => kek_settings($pass1, 1));
$node->start;
$node->safe_psql('postgres', "CREATE DATABASE $_") for qw(from10 from11 fresh);
my $default_version = $node->safe_psql('postgres',
	q{SELECT default_version FROM pg_available_extensions WHERE name = 'secretenv'});

# What each secret and application row must decrypt to, from its name alone.
my $text_value = q{'text-' || md5(%1$s) || repeat(chr(1046), length(%1$s) % 4) || ' é'};
my $json_value = q{jsonb_build_object('user', 'svc-' || %1$s, 'password', md5('pw' || %1$s), 'port', 5432)};
sub expected
{
	my ($name) = @_;
	return sprintf(qq{CASE WHEN %1\$s LIKE 'json-%%' THEN ($json_value)::text ELSE $text_value END}, $name);
}

# Text and jsonb secrets and application rows under the KEK of $version.
sub write_data
{
	my ($db, $version) = @_;
	my $tv = sprintf($text_value, 'n');
	my $jv = sprintf($json_value, 'n');
	$node->safe_psql(
		$db, qq{
SELECT secretenv.secret_create(n, $tv, 'provider-$version', 'text secret on KEK $version')
FROM (SELECT 'text-$version-' || i AS n FROM generate_series(1, 12) i) s;
SELECT secretenv.secret_create(n, $jv)
FROM (SELECT 'json-$version-' || i AS n FROM generate_series(1, 4) i) s;
INSERT INTO app.tokens (id, name, env)
SELECT id, n, secretenv.secret_encrypt($tv, id, n)
FROM (SELECT gen_random_uuid() AS id, 'app-$version-' || i AS n FROM generate_series(1, 6) i) s;
INSERT INTO app.tokens (id, name, env)
SELECT id, n, secretenv.secret_encrypt($jv, id, n)
FROM (SELECT gen_random_uuid() AS id, 'json-app-$version-' || i AS n FROM generate_series(1, 3) i) s;
INSERT INTO app.text_tokens (id, name, env)
SELECT id, n, secretenv.secret_encrypt($tv, id, n)
FROM (SELECT 's-' || md5('$version' || i) AS id, 'text-id-$version-' || i AS n FROM generate_series(1, 3) i) s;
});
	return;
}

###########################################################################
# 1.0 and 1.1 with data on two KEK versions.
my %source = (from10 => '1.0', from11 => '1.1');
for my $db (sort keys %source)
{
	$node->safe_psql(
		$db, qq{
CREATE EXTENSION secretenv VERSION '$source{$db}';
CREATE SCHEMA app;
CREATE TABLE app.tokens (id uuid PRIMARY KEY, name text NOT NULL, env secretenv.envelope NOT NULL);
CREATE TABLE app.text_tokens (id text PRIMARY KEY, name text NOT NULL, env secretenv.envelope NOT NULL);
});
	is($node->safe_psql($db, q{SELECT extversion FROM pg_extension WHERE extname = 'secretenv'}),
		$source{$db}, "database $db starts on secretenv $source{$db}");
	write_data($db, 1);
}
ok(configure_rotation_keys($node, $pass2, $pass1, 'from10'),
	'KEK version 2 current, version 1 previous');
write_data($_, 2) for sort keys %source;

my $versions_sql = q{
SELECT string_agg(v, ',' ORDER BY v) FROM (
	SELECT 'secrets:' || kek_version || ':' || count(*) AS v FROM secretenv.secrets GROUP BY kek_version
	UNION ALL SELECT 'tokens:' || (env).kek_version || ':' || count(*) FROM app.tokens GROUP BY (env).kek_version
	UNION ALL SELECT 'text_tokens:' || (env).kek_version || ':' || count(*) FROM app.text_tokens GROUP BY (env).kek_version) s};
my $bytes_sql = q{
SELECT md5(string_agg(r, ',' ORDER BY r)) FROM (
	SELECT concat_ws('|', secret_id, secret_name, encode(encrypted_value, 'hex'), encode(wrapped_dek, 'hex'),
					 kek_version, masked_value, provider, description, created_at, created_by,
					 last_updated_at, last_updated_by) AS r FROM secretenv.secrets
	UNION ALL SELECT concat_ws('|', id, name, env) FROM app.tokens
	UNION ALL SELECT concat_ws('|', id, name, env) FROM app.text_tokens) s};
my (%bytes_before, %snapshot_before);
for my $db (sort keys %source)
{
	is($node->safe_psql($db, $versions_sql),
		'secrets:1:16,secrets:2:16,text_tokens:1:3,text_tokens:2:3,tokens:1:9,tokens:2:9',
		"$db: rows on KEK versions 1 and 2 in the store and in both application tables");
	$bytes_before{$db} = $node->safe_psql($db, $bytes_sql);
	$snapshot_before{$db} = catalog_snapshot($node, $db);
}

###########################################################################
# A fresh install of the default version beside them.
$node->safe_psql('fresh', 'CREATE EXTENSION secretenv');
is($node->safe_psql('fresh', q{SELECT extversion FROM pg_extension WHERE extname = 'secretenv'}),
	$default_version, "CREATE EXTENSION secretenv installs $default_version by default");
my $fresh = catalog_snapshot($node, 'fresh');

# The snapshot covers every member of the extension: one line per member.
my $members_sql = q{
SELECT count(*) FROM pg_depend d JOIN pg_extension e ON d.refobjid = e.oid
WHERE d.refclassid = 'pg_extension'::regclass AND e.extname = 'secretenv' AND d.deptype = 'e'};
my $nmembers = $node->safe_psql('fresh', $members_sql);
cmp_ok($nmembers, '>', 0, 'the fresh install has extension members');
is(scalar(grep { /^member / } split /\n/, $fresh), $nmembers,
	"the snapshot lists each of the $nmembers members of the fresh install");

###########################################################################
# Each function, procedure and view is created once by the install script.
# Comments, string literals and dollar-quoted bodies are blanked out first,
# so only the statements themselves are parsed.
my $script = slurp_file("$FindBin::RealBin/../../sql/secretenv--$default_version.sql");
$script =~ s{--[^\n]*|/\*.*?\*/|'(?:[^']|'')*'|\$(\w*)\$.*?\$\1\$}{ }gs;
my @created;
while ($script =~ /\bCREATE\s+(?:OR\s+REPLACE\s+)?(FUNCTION|PROCEDURE|VIEW)\s+([\w.]+)\s*(\((?:[^()]|\([^()]*\))*\))?/gi)
{
	my ($kind, $name, $args) = (uc $1, $2, $3 // '()');
	if ($kind eq 'VIEW')
	{
		push @created, [ $kind, $name ];
		next;
	}
	# The argument types: no names, defaults, or OUT arguments of a function.
	my @types;
	for my $arg (split /,(?![^(]*\))/, substr($args, 1, -1))
	{
		$arg =~ s/\s+DEFAULT\s.*|\s*=.*//is;
		$arg =~ s/^\s+|\s+$//g;
		next if $arg eq '';
		my $mode = ($arg =~ s/^(IN|OUT|INOUT|VARIADIC)\s+//i) ? uc $1 : 'IN';
		next if $mode eq 'OUT' && $kind eq 'FUNCTION';
		my @words = split /\s+/, $arg;
		shift @words if @words > 1;
		push @types, join(' ', @words);
	}
	push @created, [ $kind, "$name(" . join(',', @types) . ')' ];
}
# The server spells each signature canonically (int4 is integer).
my $values = join(",\n", map { "($_, '$created[$_][0]', '$created[$_][1]')" } 0 .. $#created);
my @canonical = split /\n/, $node->safe_psql(
	'fresh', qq{
SELECT coalesce(CASE WHEN k = 'VIEW' THEN to_regclass(s)::text ELSE to_regprocedure(s)::text END,
				'(no such object) ' || s)
FROM (VALUES $values) v(i, k, s) ORDER BY i});
my %times;
$times{$_}++ for @canonical;
is(join(', ', sort grep { $times{$_} > 1 } keys %times), '',
	"the install script creates no function, procedure or view twice (of " . scalar(@created) . " CREATE statements)");
is(join(', ', grep { /^\(no such object\)/ } @canonical), '',
	'each function, procedure and view it creates is in the fresh install');
is(join("\n", sort grep { !/^\(no such object\)/ } keys %times),
	$node->safe_psql(
		'fresh', q{
SELECT string_agg(o, E'\n' ORDER BY o COLLATE "C") FROM (
	SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.pronamespace = 'secretenv'::regnamespace
	UNION ALL SELECT c.oid::regclass::text FROM pg_class c
	WHERE c.relnamespace = 'secretenv'::regnamespace AND c.relkind = 'v') x(o)}),
	'those statements create every function, procedure and view of schema secretenv');

###########################################################################
# Each upgrade, then what it must give.
for my $db (sort keys %source)
{
	my $from = $source{$db};

	# The snapshot tells versions apart: the old one differs at least in its version.
	like(catalog_diff($snapshot_before{$db}, $fresh), qr/^- extension \| version = \Q$from\E$/m,
		"the snapshot of $from differs from a fresh $default_version install");

	$node->safe_psql($db, 'ALTER EXTENSION secretenv UPDATE');
	is($node->safe_psql($db, q{SELECT extversion FROM pg_extension WHERE extname = 'secretenv'}),
		$default_version, "$db: ALTER EXTENSION secretenv UPDATE brings $from to $default_version");

	my $upgraded = catalog_snapshot($node, $db);
	is(scalar(grep { /^member / } split /\n/, $upgraded),
		$node->safe_psql($db, $members_sql),
		"$db: the snapshot lists each member of the upgraded install");
	my $diff = catalog_diff($upgraded, $fresh);
	ok($diff eq '', "$db: the catalog upgraded from $from is identical to a fresh $default_version install")
	  or diag("catalog differences ('-' only after the upgrade, '+' only in the fresh install):\n$diff");

	# Every row decrypts to what was written.
	is($node->safe_psql($db, $bytes_sql), $bytes_before{$db},
		"$db: the upgrade left every stored row byte for byte");
	is($node->safe_psql($db, $versions_sql),
		'secrets:1:16,secrets:2:16,text_tokens:1:3,text_tokens:2:3,tokens:1:9,tokens:2:9',
		"$db: rows still on KEK versions 1 and 2 after the upgrade");

	my $exp = expected('d.secret_name');
	is($node->safe_psql($db,
			qq{SELECT count(*), count(*) FILTER (WHERE d.value = $exp) FROM secretenv.decrypted_secrets d}),
		'32|32', "$db: decrypted_secrets: every secret decrypts to its value");
	is($node->safe_psql($db,
			qq{SELECT count(*), count(*) FILTER (WHERE secretenv.secret_get(d.secret_name) = $exp) FROM secretenv.secrets d}),
		'32|32', "$db: secret_get: every secret decrypts to its value");
	$exp = expected('t.name');
	is($node->safe_psql($db,
			qq{SELECT count(*), count(*) FILTER (WHERE secretenv.secret_decrypt(t.env, t.id, t.name) = $exp),
					  count(*) FILTER (WHERE secretenv.secret_decrypt((t.env).encrypted_value, (t.env).wrapped_dek,
																	  (t.env).kek_version, t.id, t.name) = $exp)
			   FROM app.tokens t}),
		'18|18|18', "$db: application table (uuid ids): every row decrypts with secret_decrypt");
	is($node->safe_psql($db,
			qq{SELECT count(*), count(*) FILTER (WHERE secretenv.secret_decrypt(t.env, t.id, t.name) = $exp)
			   FROM app.text_tokens t}),
		'6|6', "$db: application table (text ids): every row decrypts with secret_decrypt");
	is($node->safe_psql($db, 'SELECT count(*) FROM secretenv.verify_secrets()'),
		'0', "$db: verify_secrets() finds no failing row");

	# The upgraded store takes writes as a fresh one does.
	$node->safe_psql(
		$db, q{
SELECT secretenv.secret_create('after-upgrade', 'written after the upgrade');
SELECT secretenv.secret_update('text-1-1', 'updated after the upgrade');
});
	is($node->safe_psql($db,
			q{SELECT secretenv.secret_get('after-upgrade') || '|' || secretenv.secret_get('text-1-1') || '|'
			  || (SELECT kek_version FROM secretenv.secrets WHERE secret_name = 'text-1-1')}),
		'written after the upgrade|updated after the upgrade|2',
		"$db: after the upgrade: create and update work, under the current KEK");
}

unlike(slurp_file($node->logfile), qr/terminated by signal/, 'no backend crashed');
$node->stop;
done_testing();
