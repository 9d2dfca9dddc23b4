# Helpers shared by secretenv's TAP tests.
package SecretenvTest;

use strict;
use warnings;
use Exporter 'import';
use PostgreSQL::Test::Cluster;

our @EXPORT = qw(configure_rotation_keys install_result_helpers new_secretenv_node run_sql);

# A new UTF8 cluster for secretenv tests, not yet started.  Options:
#   preload => 0|1 (default 1): secretenv in shared_preload_libraries
#   conf    => text appended to postgresql.conf (key settings and the like)
#   allows_streaming => passed to init
sub new_secretenv_node
{
	my ($name, %opt) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);

	$node->init(
		extra => [ '--encoding=UTF8', '--no-locale' ],
		allows_streaming => $opt{allows_streaming} // 0);
	$node->append_conf('postgresql.conf', "shared_preload_libraries = 'secretenv'\n")
	  if $opt{preload} // 1;
	$node->append_conf('postgresql.conf', $opt{conf}) if defined $opt{conf};
	return $node;
}

# Run SQL in a new connection with verbose errors (SQLSTATEs shown) and
# without stopping at the first error; returns (stdout, stderr).
sub run_sql
{
	my ($node, $db, $sql, @psql_opts) = @_;
	my ($out, $err) = ('', '');

	$node->psql(
		$db, $sql,
		stdout => \$out,
		stderr => \$err,
		extra_params => [ '-v', 'VERBOSITY=verbose' ],
		@psql_opts);
	return ($out, $err);
}

# Make version 2 the current KEK and keep version 1 as the previous one, in
# postgresql.conf; reload and wait until new connections see version 2.
# Returns whether they did.
sub configure_rotation_keys
{
	my ($node, $new_passphrase, $old_passphrase) = @_;

	$node->append_conf(
		'postgresql.conf', qq{
secretenv.kek_passphrase = '$new_passphrase'
secretenv.kek_version = 2
secretenv.kek_previous_passphrase = '$old_passphrase'
secretenv.kek_previous_version = 1
});
	$node->reload;
	return $node->poll_query_until('postgres', 'SELECT secretenv.current_kek_version()', '2');
}

# SQL helpers that turn a decrypt or secret_get into a comparable string:
# 'OK:' || hex of the plaintext's UTF-8 bytes, or 'ERR:' || SQLSTATE.
sub install_result_helpers
{
	my ($node) = @_;

	$node->safe_psql('postgres', <<'SQL');
CREATE FUNCTION t_hex(t text) RETURNS text LANGUAGE sql IMMUTABLE
	AS $$ SELECT encode(convert_to(t, 'UTF8'), 'hex') $$;
CREATE FUNCTION t_dec_uuid(ev text, wd text, v int4, id uuid, nm text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
	RETURN 'OK:' || t_hex(secretenv.secret_decrypt(decode(ev, 'hex'), decode(wd, 'hex'), v, id, nm));
EXCEPTION WHEN OTHERS THEN
	RETURN 'ERR:' || SQLSTATE;
END $$;
CREATE FUNCTION t_dec_text(ev text, wd text, v int4, id text, nm text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
	RETURN 'OK:' || t_hex(secretenv.secret_decrypt(decode(ev, 'hex'), decode(wd, 'hex'), v, id, nm));
EXCEPTION WHEN OTHERS THEN
	RETURN 'ERR:' || SQLSTATE;
END $$;
CREATE FUNCTION t_get(nm text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
	RETURN 'OK:' || t_hex(secretenv.secret_get(nm));
EXCEPTION WHEN OTHERS THEN
	RETURN 'ERR:' || SQLSTATE;
END $$;
SQL
	return;
}

1;
