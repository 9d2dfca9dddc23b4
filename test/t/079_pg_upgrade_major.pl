# pg_upgrade from PostgreSQL 15 to the major under test keeps every secret:
# a 15 cluster with secretenv 1.1 (preloaded, passphrase command, secrets of
# two KEK versions, an RLS policy, an application table written with
# secret_encrypt) is upgraded with --copy and with --link; afterwards every
# secret and every application value decrypts, verify_secrets() is empty,
# the KEK fingerprints of status() are those of the old cluster, and ALTER
# EXTENSION secretenv UPDATE reaches the default version.  It also proves
# the check bites: pg_upgrade refuses a new installation without the
# secretenv library.
#
# Needs the old major's installation beside this one (SECRETENV_OLD_PG, e.g.
# /usr/lib/postgresql/15, with secretenv 1.1 built for it): test/run_all.sh
# provides it in the chroots of PostgreSQL 18 and 19 (test/majors/old_server.sh).
# On the host's 15 there is no newer major, and the file skips itself, saying so.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SecretenvTest;
use Test::More;

my $old_install = $ENV{SECRETENV_OLD_PG} // '';
plan skip_all => 'pg_upgrade needs an older major installed beside this one '
  . '(SECRETENV_OLD_PG; test/run_all.sh sets it in the PostgreSQL 18 and 19 chroots)'
  unless $old_install ne '' && -x "$old_install/bin/postgres";

my $new_bindir = `pg_config --bindir`;
chomp $new_bindir;
my $tmp = PostgreSQL::Test::Utils::tempdir;
my $command = write_script($tmp, 'kek.sh',
	q{case "$1" in 1) echo 'upgrade-passphrase-one-0123456789abcdef' ;; }
	  . q{2) echo 'upgrade-passphrase-two-0123456789abcdef' ;; *) exit 1 ;; esac});
my $keys = "secretenv.kek_passphrase_command = '$command %v'\n";
my $keys_v1 = $keys . "secretenv.kek_version = 1\n";
my $keys_v2 = $keys . "secretenv.kek_version = 2\nsecretenv.kek_previous_version = 1\n";

# pg_upgrade wants the same checksum setting on both sides; 18 turned
# checksums on by default in initdb, 15 had them off.
sub init_node
{
	my ($name, %opt) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name,
		$opt{install_path} ? (install_path => $opt{install_path}) : ());
	my @extra = ('--encoding=UTF8', '--no-locale');
	push @extra, '--no-data-checksums' if $node->pg_version >= 18;
	$node->init(extra => \@extra);
	$node->append_conf('postgresql.conf', $opt{conf}) if defined $opt{conf};
	return $node;
}

###########################################################################
# The old cluster: 15, secretenv 1.1.
###########################################################################
my $old = init_node('old', install_path => $old_install,
	conf => "shared_preload_libraries = 'secretenv'\n$keys_v1");
$old->start;
$old->safe_psql('postgres', q{
CREATE EXTENSION secretenv VERSION '1.1';
SELECT secretenv.secret_create('v1_' || i, 'first-key-value-' || i) FROM generate_series(1, 5) i;
});
$old->append_conf('postgresql.conf', $keys_v2);
$old->restart;
$old->safe_psql('postgres', q{
SELECT secretenv.secret_create('v2_' || i, 'second-key-value-' || i) FROM generate_series(1, 5) i;
CREATE ROLE app_reader LOGIN;
GRANT secretenv_reader TO app_reader;
GRANT SELECT ON secretenv.secrets TO app_reader;
ALTER TABLE secretenv.secrets ENABLE ROW LEVEL SECURITY;
CREATE POLICY app_reader_v2 ON secretenv.secrets FOR SELECT TO app_reader
	USING (secret_name LIKE 'v2\_%');
CREATE TABLE app_tokens (id int PRIMARY KEY, token secretenv.envelope);
INSERT INTO app_tokens
	SELECT i, secretenv.secret_encrypt('app-token-' || i, 'app-' || i, 'app_tokens')
	FROM generate_series(1, 20) i;
});
is($old->safe_psql('postgres', q{SELECT string_agg(kek_version || ':' || n, ',' ORDER BY kek_version)
	FROM (SELECT kek_version, count(*) n FROM secretenv.secrets GROUP BY 1) s}),
	'1:5,2:5', 'old cluster: secrets under KEK versions 1 and 2');
is($old->safe_psql('postgres', q{SELECT extversion FROM pg_extension WHERE extname = 'secretenv'}),
	'1.1', 'old cluster: secretenv 1.1');
my $fingerprints = $old->safe_psql('postgres', q{SELECT secretenv.status()->'kek_fingerprints'});
like($fingerprints, qr/"1": "[0-9a-f]{16,}".*"2": "[0-9a-f]{16,}"/s,
	'old cluster: status() shows the fingerprints of both KEKs');
my $expected_secrets = $old->safe_psql('postgres',
	q{SELECT string_agg(secret_name || '=' || secretenv.secret_get(secret_name), ',' ORDER BY secret_name)
	  FROM secretenv.secrets});
my $expected_tokens = $old->safe_psql('postgres',
	q{SELECT string_agg(secretenv.secret_decrypt(token, 'app-' || id, 'app_tokens'), ',' ORDER BY id)
	  FROM app_tokens});
like($expected_secrets, qr/^v1_1=first-key-value-1,.*v2_5=second-key-value-5$/,
	'old cluster: every secret reads back');

# The PostgreSQL 15 build of this machine records a pg_attver=N option on
# every column (see SecretenvTest::catalog_snapshot), and row values of a
# composite type carry the version of their type.  A new server that knows
# the option (17 here) needs it kept, or it refuses the stored envelopes
# ("using outdated tuple descriptor"); one that does not (18) refuses the
# option itself when pg_upgrade restores the schema, with or without
# secretenv, so there it goes before the upgrade.
my $probe = init_node('probe');
$probe->start;
my ($probe_rc) = $probe->psql('postgres',
	'CREATE TABLE p (a int); ALTER TABLE p ALTER COLUMN a SET (pg_attver = 1)');
$probe->stop;
my $new_knows_attver = $probe_rc == 0;
if (!$new_knows_attver)
{
	$old->safe_psql('postgres', q{
UPDATE pg_catalog.pg_attribute
	SET attoptions = NULLIF(ARRAY(SELECT o FROM unnest(attoptions) o WHERE o NOT LIKE 'pg\_attver=%'), '{}')
	WHERE attoptions::text LIKE '%pg\_attver=%';
});
}
note('the new server ' . ($new_knows_attver ? 'keeps' : 'does not know') . ' the pg_attver option');
$old->stop;

###########################################################################
# pg_upgrade to this major, with copy and with link.
###########################################################################
sub upgrade
{
	my ($name, $mode) = @_;
	my $new = init_node($name, conf => "shared_preload_libraries = 'secretenv'\n$keys_v2");
	my $dir = "$tmp/$name-run";
	mkdir $dir;
	my @cmd = (
		"$new_bindir/pg_upgrade", '--no-sync',
		'-b', "$old_install/bin", '-B', $new_bindir,
		'-d', $old->data_dir, '-D', $new->data_dir,
		'-p', $old->port, '-P', $new->port, '-s', $dir, $mode);
	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run(\@cmd, '>', \$out, '2>', \$err, init => sub { chdir $dir });
	ok($ok, "pg_upgrade $mode to " . $new->pg_version . ' succeeds') or diag("$out\n$err");
	return $new;
}

sub check_upgraded
{
	my ($new, $mode) = @_;
	$new->start;
	is($new->safe_psql('postgres',
		q{SELECT string_agg(secret_name || '=' || secretenv.secret_get(secret_name), ',' ORDER BY secret_name)
		  FROM secretenv.secrets}),
		$expected_secrets, "$mode: every secret of both KEK versions decrypts");
	is($new->safe_psql('postgres',
		q{SELECT string_agg(secretenv.secret_decrypt(token, 'app-' || id, 'app_tokens'), ',' ORDER BY id)
		  FROM app_tokens}),
		$expected_tokens, "$mode: every application value decrypts");
	is($new->safe_psql('postgres', q{SELECT count(*) FROM secretenv.verify_secrets()}),
		'0', "$mode: verify_secrets() is empty");
	is($new->safe_psql('postgres', q{SELECT secretenv.status()->'kek_fingerprints'}),
		$fingerprints, "$mode: status() shows the old cluster's KEK fingerprints");
	is($new->safe_psql('postgres', q{SET ROLE app_reader;
		SELECT string_agg(secret_name, ',' ORDER BY secret_name) FROM secretenv.secrets}),
		'v2_1,v2_2,v2_3,v2_4,v2_5', "$mode: the RLS policy still limits app_reader");
	$new->safe_psql('postgres', 'ALTER EXTENSION secretenv UPDATE');
	my $default = $new->safe_psql('postgres',
		q{SELECT default_version FROM pg_available_extensions WHERE name = 'secretenv'});
	is($new->safe_psql('postgres', q{SELECT extversion FROM pg_extension WHERE extname = 'secretenv'}),
		$default, "$mode: ALTER EXTENSION secretenv UPDATE reaches $default");
	is($new->safe_psql('postgres', q{SELECT secretenv.secret_get('v1_3') || ' ' || secretenv.secret_get('v2_4')}),
		'first-key-value-3 second-key-value-4', "$mode: secrets read after the update");
	$new->safe_psql('postgres', q{SELECT secretenv.secret_create('after_upgrade', 'new-value')});
	is($new->safe_psql('postgres', q{SELECT kek_version || ' ' || secretenv.secret_get('after_upgrade')
		FROM secretenv.secrets WHERE secret_name = 'after_upgrade'}),
		'2 new-value', "$mode: a new secret is written under the current KEK");
	$new->stop;
}

# --copy leaves the old cluster usable; --link, last, takes its files over.
check_upgraded(upgrade('new_copy', '--copy'), 'copy');
check_upgraded(upgrade('new_link', '--link'), 'link');

###########################################################################
# The check bites: a new installation without secretenv's library.
###########################################################################
{
	# A copy of this installation (it finds its lib and share directories
	# relative to its binaries) from which secretenv.so is removed.
	my $libdir = `pg_config --pkglibdir`;
	my $sharedir = `pg_config --sharedir`;
	chomp($libdir, $sharedir);
	my $copy = "$tmp/nolib";
	for my $d ($new_bindir, $libdir, $sharedir)
	{
		system('mkdir', '-p', "$copy$d") == 0 or die "mkdir $copy$d";
		system('cp', '-a', "$d/.", "$copy$d/") == 0 or die "cp $d";
	}
	unlink "$copy$libdir/secretenv.so" or die $!;

	# A fresh old cluster (the --link run took the first one's files).
	my $old2 = init_node('old2', install_path => $old_install,
		conf => "shared_preload_libraries = 'secretenv'\n$keys_v1");
	$old2->start;
	$old2->safe_psql('postgres', q{CREATE EXTENSION secretenv VERSION '1.1';
		SELECT secretenv.secret_create('kept', 'kept-value');});
	$old2->safe_psql('postgres', q{UPDATE pg_catalog.pg_attribute SET attoptions = NULL
		WHERE attoptions::text LIKE '%pg\_attver=%'}) unless $new_knows_attver;
	$old2->stop;
	my $bare = PostgreSQL::Test::Cluster->new('new_nolib', install_path => "$copy" . ($new_bindir =~ s{/bin$}{}r));
	my @extra = ('--encoding=UTF8', '--no-locale');
	push @extra, '--no-data-checksums' if $bare->pg_version >= 18;
	$bare->init(extra => \@extra);
	my $dir = "$tmp/nolib-run";
	mkdir $dir;
	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run(
		[ "$copy$new_bindir/pg_upgrade", '--check',
		  '-b', "$old_install/bin", '-B', "$copy$new_bindir",
		  '-d', $old2->data_dir, '-D', $bare->data_dir,
		  '-p', $old2->port, '-P', $bare->port, '-s', $dir ],
		'>', \$out, '2>', \$err, init => sub { chdir $dir });
	ok(!$ok, 'pg_upgrade --check fails when the new installation lacks secretenv.so');
	like($out . $err, qr/loadable libraries that are missing from the\s+new installation/,
		'pg_upgrade names the missing loadable library as the reason');
	my @reports = glob($bare->data_dir . '/pg_upgrade_output.d/*/loadable_libraries.txt');
	ok(scalar(grep { slurp_file($_) =~ /could not load library "(?:\$libdir\/)?secretenv"/ } @reports),
		'its report lists $libdir/secretenv');
}

done_testing();
