# Helpers shared by secretenv's TAP tests.
package SecretenvTest;

use strict;
use warnings;
use Encode qw(encode_utf8);
use Exporter 'import';
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils ();
use Test::More;
use Time::HiRes ();

our @EXPORT = qw(new_secretenv_node new_statement_text_node statement_text_settings
  kek_settings kek_command_settings conf_string sql_string hex_utf8 write_keys_file configure_rotation_keys reload_generation
  run_sql session_query run_plaintext_cases pgbench_check install_result_helpers secrets_decrypt_counts
  two_tenants_sql error_lines catalog_snapshot catalog_diff write_script kek_hex random_hex
  run_tree_checker wait_for_crash_recovery);

# A new UTF8 cluster for secretenv tests, not yet started.  Options:
#   preload => 0|1 (default 1): secretenv in shared_preload_libraries, or
#              a string: the whole shared_preload_libraries list
#   conf    => text appended to postgresql.conf (key settings and the like)
#   keys_file => 1: postgresql.conf includes secretenv_keys.conf of the data
#              directory, if it exists (see write_keys_file)
#   allows_streaming => passed to init
sub new_secretenv_node
{
	my ($name, %opt) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);

	$node->init(
		extra => [ '--encoding=UTF8', '--no-locale' ],
		allows_streaming => $opt{allows_streaming} // 0);
	my $preload = $opt{preload} // 1;
	$preload = 'secretenv' if $preload eq '1';
	$node->append_conf('postgresql.conf', "shared_preload_libraries = '$preload'\n")
	  if $preload;
	$node->append_conf('postgresql.conf', "include_if_exists = 'secretenv_keys.conf'\n")
	  if $opt{keys_file};
	$node->append_conf('postgresql.conf', $opt{conf}) if defined $opt{conf};
	return $node;
}

# postgresql.conf lines that make $version, derived from $passphrase, the
# current KEK and, when $previous_passphrase is given, $previous_version
# the previous one.
sub kek_settings
{
	my ($passphrase, $version, $previous_passphrase, $previous_version) = @_;
	my $conf = "secretenv.kek_passphrase = '$passphrase'\nsecretenv.kek_version = $version\n";
	$conf .= "secretenv.kek_previous_passphrase = '$previous_passphrase'\n"
	  . "secretenv.kek_previous_version = $previous_version\n"
	  if defined $previous_passphrase;
	return $conf;
}

# As kek_settings, through secretenv.kek_passphrase_command (a shell
# "case" on %v that prints the passphrase): what a cluster without
# shared_preload_libraries needs, since it refuses a passphrase written in
# the configuration.  Passphrases of letters, digits, '-', '_' and '.' only.
sub kek_command_settings
{
	my ($passphrase, $version, $previous_passphrase, $previous_version) = @_;
	my $case = "$version) echo $passphrase;;";
	$case .= " $previous_version) echo $previous_passphrase;;" if defined $previous_passphrase;
	for my $p ($passphrase, $previous_passphrase // '')
	{
		die "kek_command_settings: unsupported passphrase" unless $p =~ /^[\w.-]*$/;
	}
	my $conf = "secretenv.kek_passphrase_command = 'case %v in $case *) exit 3;; esac'\n"
	  . "secretenv.kek_version = $version\n";
	$conf .= "secretenv.kek_previous_version = $previous_version\n" if defined $previous_passphrase;
	return $conf;
}

# A postgresql.conf string literal: quotes doubled, backslashes and control
# characters escaped (the conf lexer reads \\, \n, \ooo ...), UTF-8 bytes.
sub conf_string
{
	my $s = encode_utf8($_[0]);
	$s =~ s/\\/\\\\/g;
	$s =~ s/'/''/g;
	$s =~ s/([\x00-\x1f\x7f])/sprintf('\\%03o', ord($1))/ge;
	return "'$s'";
}

# An SQL string literal (standard_conforming_strings is on).
sub sql_string
{
	my ($s) = @_;
	$s =~ s/'/''/g;
	return "'$s'";
}

# The hex of a string's UTF-8 bytes.
sub hex_utf8 { return unpack('H*', encode_utf8($_[0])); }

# Replace the key settings file of a node made with keys_file => 1 by
# $conf, written as bytes; takes effect at the next reload or start.
sub write_keys_file
{
	my ($node, $conf) = @_;
	my $path = $node->data_dir . '/secretenv_keys.conf';
	open(my $fh, '>:raw', $path) or die "could not write $path: $!";
	print $fh $conf;
	close($fh);
	return;
}

# After a backend was killed with SIGKILL: wait, up to the TAP timeout,
# until the postmaster has noticed (its log, from $log_offset on, says it
# reinitializes), then until the server accepts connections to $db again
# and has left recovery.  Not poll_query_until: it feeds its query through
# psql's stdin, and a psql refused during crash recovery can exit before
# reading it, which makes IPC::Run die with EPIPE.  Here the query is an
# argument.
sub wait_for_crash_recovery
{
	my ($node, $db, $log_offset) = @_;
	my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;

	$node->wait_for_log(qr/all server processes terminated; reinitializing/, $log_offset);
	while (time < $deadline)
	{
		my ($out, $err) = ('', '');
		IPC::Run::run(
			[
				$node->installed_command('psql'), '-XAtq', '-d', $node->connstr($db),
				'-c', 'SELECT NOT pg_is_in_recovery()'
			],
			'<', \undef, '>', \$out, '2>', \$err);
		return 1 if $out eq "t\n";
		Time::HiRes::usleep(100_000);
	}
	return 0;
}

# Run SQL in a new connection with verbose errors (SQLSTATEs shown); an
# error stops the script but does not die.  Returns (stdout, stderr).
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

# Run SQL in a background_psql session opened with on_error_stop => 0;
# never dies.  Returns stdout, or in list context (stdout, stderr of this
# query alone, trimmed).
sub session_query
{
	my ($session, $sql) = @_;
	$session->{stderr} = '';
	my $out = $session->query($sql);
	(my $err = $session->{stderr}) =~ s/^\s+|\s+$//g;
	return wantarray ? ($out, $err) : $out;
}

# Append $conf and "secretenv_test.generation = $generation" to
# postgresql.conf, reload, and wait until new connections see that
# generation (die if they never do).  With a background session $session
# (opened with on_error_stop => 0), wait up to 10 s more for it to see it
# too, and return whether it did.
sub reload_generation
{
	my ($node, $conf, $generation, $session) = @_;
	my $seen_sql = "SELECT current_setting('secretenv_test.generation', true)";

	$node->append_conf('postgresql.conf', $conf . "secretenv_test.generation = $generation\n");
	$node->reload;
	$node->poll_query_until('postgres', "$seen_sql = '$generation'")
	  or die "reload to generation $generation not seen";
	return 1 unless $session;
	for (1 .. 100)
	{
		my ($seen) = session_query($session, $seen_sql);
		return 1 if $seen eq $generation;
		Time::HiRes::sleep(0.1);
	}
	return 0;
}

# "a|b|n" for secretenv.decrypted_secrets in $db: a rows whose secret_get
# and b rows whose decrypted value equal $expected_sql (an expression of
# secret_name), of n rows.
sub secrets_decrypt_counts
{
	my ($node, $db, $expected_sql) = @_;
	return $node->safe_psql($db, qq{
SELECT count(*) FILTER (WHERE secretenv.secret_get(secret_name) = $expected_sql),
	   count(*) FILTER (WHERE d.value = $expected_sql),
	   count(*)
FROM secretenv.decrypted_secrets d});
}

# Run each case [ label, SQL with %s for the plaintext, expected SQLSTATE
# or '' ] in database postgres, in a connection of its own, with the
# plaintext $plaintext->(label); check that it succeeds, or fails with that
# SQLSTATE.  Returns each case's stderr by label.
sub run_plaintext_cases
{
	my ($node, $plaintext, @cases) = @_;
	my %err;
	for my $case (@cases)
	{
		my ($label, $template, $sqlstate) = @$case;
		(undef, my $err) = run_sql($node, 'postgres', sprintf($template, $plaintext->($label)));
		if ($sqlstate)
		{
			like($err, qr/ERROR:  $sqlstate:/, "$label: fails with $sqlstate");
		}
		else
		{
			is($err, '', "$label: succeeds");
		}
		$err{$label} = $err;
	}
	return %err;
}

# Run the pgbench script $script, written to "$dir/$label.sql", twice in
# one client over protocol $opt{mode} (default extended), with :value bound
# to $opt{value} and :harmless to $opt{harmless}; check that both
# transactions ran or, with $opt{fails}, that stderr matches that pattern.
sub pgbench_check
{
	my ($node, $dir, $label, $script, %opt) = @_;
	my $mode = $opt{mode} // 'extended';
	my $file = "$dir/$label.sql";
	my ($out, $err) = ('', '');

	PostgreSQL::Test::Utils::append_to_file($file, $script);
	IPC::Run::run(
		[
			'pgbench', '-n', '-M', $mode, '-c', '1', '-t', '2',
			'-D', "value=$opt{value}", '-D', "harmless=$opt{harmless}",
			'-h', $node->host, '-p', $node->port, '-f', $file, 'postgres'
		],
		'>', \$out, '2>', \$err);
	if ($opt{fails})
	{
		like($err, $opt{fails}, "pgbench -M $mode $label: fails as intended");
	}
	else
	{
		like($out, qr/number of transactions actually processed: 2\/2/,
			"pgbench -M $mode $label: runs") or diag($err);
	}
	return;
}

# Make version 2 the current KEK and keep version 1 as the previous one, in
# postgresql.conf; reload and wait until new connections to $db (default
# postgres, which must have the extension) see version 2.  Returns whether
# they did.
sub configure_rotation_keys
{
	my ($node, $new_passphrase, $old_passphrase, $db) = @_;
	$db //= 'postgres';

	$node->append_conf('postgresql.conf', kek_settings($new_passphrase, 2, $old_passphrase, 1));
	$node->reload;
	return $node->poll_query_until($db, 'SELECT secretenv.current_kek_version()', '2');
}

# SQL helpers that turn a call into a comparable string: t_hex(text) is the
# hex of a text's UTF-8 bytes; t_dec_uuid, t_dec_text (a decrypt) and t_get
# (a secret_get) return 'OK:' || that hex of the plaintext, or
# 'ERR:' || SQLSTATE.  More functions of that kind come as
# [ 'name(arguments)', 'text expression' ] pairs: each returns the
# expression, or 'ERR:' || SQLSTATE if it raises an error.
sub install_result_helpers
{
	my ($node, @more) = @_;
	my $decrypt = "'OK:' || t_hex(secretenv.secret_decrypt(decode(ev, 'hex'), decode(wd, 'hex'), v, id, nm))";
	my $sql = q{CREATE FUNCTION t_hex(t text) RETURNS text LANGUAGE sql IMMUTABLE
	AS $$ SELECT encode(convert_to(t, 'UTF8'), 'hex') $$;
};
	for my $function ([ 't_dec_uuid(ev text, wd text, v int4, id uuid, nm text)', $decrypt ],
		[ 't_dec_text(ev text, wd text, v int4, id text, nm text)', $decrypt ],
		[ 't_get(nm text)', "'OK:' || t_hex(secretenv.secret_get(nm))" ], @more)
	{
		my ($signature, $result) = @$function;
		$sql .= qq{CREATE FUNCTION $signature RETURNS text
LANGUAGE plpgsql AS \$\$
BEGIN
	RETURN $result;
EXCEPTION WHEN OTHERS THEN
	RETURN 'ERR:' || SQLSTATE;
END \$\$;
};
	}
	$node->safe_psql('postgres', $sql);
	return;
}

# A catalog snapshot of secretenv in database $db: every object that is a
# member of the extension or lives in schema secretenv, with the properties
# an upgrade could get wrong, one sorted line per property
# ("object | property = value", newlines in values escaped).  Nothing in it
# names an object: a new object is covered without touching this query.
# Comparing the snapshots of an upgraded and a freshly installed database is
# the check of DESIGN §7.
sub catalog_snapshot
{
	my ($node, $db) = @_;

	my $sql = <<'SQL';
SET search_path = pg_catalog;
WITH ext AS (SELECT e.* FROM pg_extension e WHERE e.extname = 'secretenv'),
nsp AS (SELECT n.* FROM pg_namespace n WHERE n.nspname = 'secretenv'),
members AS (
	SELECT d.classid, d.objid, d.objsubid FROM pg_depend d, ext
	WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'),
in_schema(classid, objid) AS (
	SELECT 'pg_class'::regclass, oid FROM pg_class WHERE relnamespace IN (SELECT oid FROM nsp)
	UNION ALL SELECT 'pg_proc'::regclass, oid FROM pg_proc WHERE pronamespace IN (SELECT oid FROM nsp)
	UNION ALL SELECT 'pg_type'::regclass, oid FROM pg_type WHERE typnamespace IN (SELECT oid FROM nsp)
	UNION ALL SELECT 'pg_operator'::regclass, oid FROM pg_operator WHERE oprnamespace IN (SELECT oid FROM nsp)
	UNION ALL SELECT 'pg_opclass'::regclass, oid FROM pg_opclass WHERE opcnamespace IN (SELECT oid FROM nsp)
	UNION ALL SELECT 'pg_opfamily'::regclass, oid FROM pg_opfamily WHERE opfnamespace IN (SELECT oid FROM nsp)
	UNION ALL SELECT 'pg_collation'::regclass, oid FROM pg_collation WHERE collnamespace IN (SELECT oid FROM nsp)
	UNION ALL SELECT 'pg_conversion'::regclass, oid FROM pg_conversion WHERE connamespace IN (SELECT oid FROM nsp)
	UNION ALL SELECT 'pg_constraint'::regclass, oid FROM pg_constraint WHERE connamespace IN (SELECT oid FROM nsp)
	UNION ALL SELECT 'pg_statistic_ext'::regclass, oid FROM pg_statistic_ext WHERE stxnamespace IN (SELECT oid FROM nsp)
	UNION ALL SELECT 'pg_ts_config'::regclass, oid FROM pg_ts_config WHERE cfgnamespace IN (SELECT oid FROM nsp)
	UNION ALL SELECT 'pg_ts_dict'::regclass, oid FROM pg_ts_dict WHERE dictnamespace IN (SELECT oid FROM nsp)
	UNION ALL SELECT 'pg_ts_parser'::regclass, oid FROM pg_ts_parser WHERE prsnamespace IN (SELECT oid FROM nsp)
	UNION ALL SELECT 'pg_ts_template'::regclass, oid FROM pg_ts_template WHERE tmplnamespace IN (SELECT oid FROM nsp)),
objs(classid, objid) AS (
	SELECT classid, objid FROM members UNION SELECT classid, objid FROM in_schema),
procs AS (SELECT objid AS oid FROM objs WHERE classid = 'pg_proc'::regclass),
rels AS (SELECT objid AS oid FROM objs WHERE classid = 'pg_class'::regclass),
types AS (SELECT objid AS oid FROM objs WHERE classid = 'pg_type'::regclass),
-- objects that belong to a relation or to the database rather than to a schema
attached(classid, objid) AS (
	SELECT 'pg_trigger'::regclass, t.oid FROM pg_trigger t WHERE t.tgrelid IN (SELECT oid FROM rels) AND NOT t.tgisinternal
	UNION ALL SELECT 'pg_policy'::regclass, p.oid FROM pg_policy p WHERE p.polrelid IN (SELECT oid FROM rels)
	UNION ALL SELECT 'pg_rewrite'::regclass, r.oid FROM pg_rewrite r WHERE r.ev_class IN (SELECT oid FROM rels)
	UNION ALL SELECT 'pg_event_trigger'::regclass, oid FROM pg_event_trigger
	UNION ALL SELECT 'pg_namespace'::regclass, oid FROM nsp
	UNION ALL SELECT 'pg_extension'::regclass, oid FROM ext),
everything(classid, objid) AS (SELECT classid, objid FROM objs UNION SELECT classid, objid FROM attached),
lines(obj, prop, val) AS (
	-- the extension, its configuration tables (pg_dump) and its members
	SELECT 'extension', 'version', extversion FROM ext
	UNION ALL SELECT 'extension', 'owner', pg_get_userbyid(extowner) FROM ext
	UNION ALL SELECT 'extension', 'schema', extnamespace::regnamespace::text FROM ext
	UNION ALL SELECT 'extension', 'relocatable', extrelocatable::text FROM ext
	UNION ALL SELECT 'extension', 'config_dump ' || c.relid::regclass::text, coalesce(c.cond, '(null)')
		FROM ext, unnest(ext.extconfig, ext.extcondition) c(relid, cond)
	UNION ALL SELECT 'member ' || i.type || ' ' || i.identity, 'member', 'yes'
		FROM members m, pg_identify_object(m.classid, m.objid, m.objsubid) i
	UNION ALL SELECT 'object ' || i.type || ' ' || i.identity, 'in schema', 'yes'
		FROM in_schema o, pg_identify_object(o.classid, o.objid, 0) i
	-- the schema
	UNION ALL SELECT 'schema ' || nspname, 'owner', pg_get_userbyid(nspowner) FROM nsp
	UNION ALL SELECT 'schema ' || nspname, 'acl', ACL(nspacl) FROM nsp
	UNION ALL SELECT 'default acl ' || pg_get_userbyid(a.defaclrole) || ' ' || a.defaclobjtype::text, 'acl', ACL(a.defaclacl)
		FROM pg_default_acl a WHERE a.defaclnamespace IN (SELECT oid FROM nsp)
	-- functions
	UNION ALL SELECT 'function ' || i.identity, x.prop, x.val
		FROM procs f JOIN pg_proc p ON p.oid = f.oid
			JOIN pg_language l ON l.oid = p.prolang,
			pg_identify_object('pg_proc'::regclass, p.oid, 0) i,
			LATERAL (VALUES
				('kind', p.prokind::text),
				('arguments', pg_get_function_arguments(p.oid)),
				('result', pg_get_function_result(p.oid)),
				('language', l.lanname::text),
				('volatility', p.provolatile::text),
				('strict', p.proisstrict::text),
				('parallel', p.proparallel::text),
				('security definer', p.prosecdef::text),
				('leakproof', p.proleakproof::text),
				('returns set', p.proretset::text),
				('cost', p.procost::text),
				('rows', p.prorows::text),
				('support', p.prosupport::regproc::text),
				('config', p.proconfig::text),
				('source', p.prosrc),
				('binary', p.probin),
				('sql body', CASE WHEN p.prosqlbody IS NOT NULL THEN pg_get_function_sqlbody(p.oid) END),
				('owner', pg_get_userbyid(p.proowner)::text),
				('acl', ACL(p.proacl))) x(prop, val)
	-- relations: tables, views, indexes, sequences, composite types
	UNION ALL SELECT 'relation ' || i.identity, x.prop, x.val
		FROM rels r JOIN pg_class c ON c.oid = r.oid
			LEFT JOIN pg_am am ON am.oid = c.relam,
			pg_identify_object('pg_class'::regclass, c.oid, 0) i,
			LATERAL (VALUES
				('kind', c.relkind::text),
				('persistence', c.relpersistence::text),
				('access method', am.amname::text),
				('owner', pg_get_userbyid(c.relowner)::text),
				('acl', ACL(c.relacl)),
				('row security', c.relrowsecurity::text),
				('force row security', c.relforcerowsecurity::text),
				('replica identity', c.relreplident::text),
				('options', c.reloptions::text),
				('partition bound', pg_get_expr(c.relpartbound, c.oid)),
				('view', CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END),
				('index', CASE WHEN c.relkind IN ('i', 'I') THEN pg_get_indexdef(c.oid) END)) x(prop, val)
	UNION ALL SELECT 'sequence ' || s.seqrelid::regclass::text, 'parameters',
			concat_ws(' ', format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmax, s.seqmin, s.seqcache, s.seqcycle)
		FROM pg_sequence s WHERE s.seqrelid IN (SELECT oid FROM rels)
	-- columns, by position among the live ones (an upgrade may leave dropped ones)
	UNION ALL SELECT 'column ' || a.attrelid::regclass::text || '.' || quote_ident(a.attname), x.prop, x.val
		FROM pg_attribute a
			JOIN pg_class c ON c.oid = a.attrelid AND c.relkind NOT IN ('i', 'I')
			LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
			LEFT JOIN pg_collation co ON co.oid = a.attcollation,
			LATERAL (VALUES
				('position', (SELECT count(*) FROM pg_attribute b
							  WHERE b.attrelid = a.attrelid AND b.attnum > 0 AND NOT b.attisdropped
								AND b.attnum <= a.attnum)::text),
				('type', format_type(a.atttypid, a.atttypmod)),
				('not null', a.attnotnull::text),
				('default', pg_get_expr(d.adbin, d.adrelid)),
				('identity', a.attidentity::text),
				('generated', a.attgenerated::text),
				('collation', co.collname::text),
				('storage', a.attstorage::text),
				('compression', a.attcompression::text),
				('statistics target', a.attstattarget::text),
				-- the server used here records a pg_attver=N option on every
				-- column, N differing between any two databases: not ours
				('options', (SELECT string_agg(o, ',' ORDER BY o) FROM unnest(a.attoptions) o
							 WHERE o NOT LIKE 'pg\_attver=%')),
				('acl', ACL(a.attacl))) x(prop, val)
		WHERE a.attrelid IN (SELECT oid FROM rels) AND a.attnum > 0 AND NOT a.attisdropped
	-- constraints of tables and domains
	UNION ALL SELECT 'constraint ' || i.identity, x.prop, x.val
		FROM pg_constraint k, pg_identify_object('pg_constraint'::regclass, k.oid, 0) i,
			LATERAL (VALUES
				('type', k.contype::text),
				('definition', pg_get_constraintdef(k.oid)),
				('deferrable', k.condeferrable::text),
				('deferred', k.condeferred::text),
				('validated', k.convalidated::text),
				('no inherit', k.connoinherit::text)) x(prop, val)
		WHERE k.conrelid IN (SELECT oid FROM rels) OR k.contypid IN (SELECT oid FROM types)
			OR k.connamespace IN (SELECT oid FROM nsp)
	-- triggers (tgenabled: O origin, A always, R replica, D disabled), rules, policies
	UNION ALL SELECT 'trigger ' || i.identity, x.prop, x.val
		FROM pg_trigger t, pg_identify_object('pg_trigger'::regclass, t.oid, 0) i,
			LATERAL (VALUES ('definition', pg_get_triggerdef(t.oid)), ('enabled', t.tgenabled::text)) x(prop, val)
		WHERE t.tgrelid IN (SELECT oid FROM rels) AND NOT t.tgisinternal
	UNION ALL SELECT 'rule ' || i.identity, x.prop, x.val
		FROM pg_rewrite w, pg_identify_object('pg_rewrite'::regclass, w.oid, 0) i,
			LATERAL (VALUES ('definition', pg_get_ruledef(w.oid)), ('enabled', w.ev_enabled::text)) x(prop, val)
		WHERE w.ev_class IN (SELECT oid FROM rels) AND w.rulename <> '_RETURN'
	UNION ALL SELECT 'policy ' || i.identity, x.prop, x.val
		FROM pg_policy p, pg_identify_object('pg_policy'::regclass, p.oid, 0) i,
			LATERAL (VALUES
				('command', p.polcmd::text),
				('permissive', p.polpermissive::text),
				('roles', (SELECT string_agg(CASE WHEN r = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(r)::text END, ',' ORDER BY 1)
						   FROM unnest(p.polroles) r)),
				('using', pg_get_expr(p.polqual, p.polrelid)),
				('with check', pg_get_expr(p.polwithcheck, p.polrelid))) x(prop, val)
		WHERE p.polrelid IN (SELECT oid FROM rels)
	-- types
	UNION ALL SELECT 'type ' || i.identity, x.prop, x.val
		FROM types ty JOIN pg_type t ON t.oid = ty.oid
			LEFT JOIN pg_collation co ON co.oid = t.typcollation,
			pg_identify_object('pg_type'::regclass, t.oid, 0) i,
			LATERAL (VALUES
				('type', t.typtype::text),
				('length', t.typlen::text),
				('by value', t.typbyval::text),
				('category', t.typcategory::text),
				('preferred', t.typispreferred::text),
				('delimiter', t.typdelim::text),
				('element', CASE WHEN t.typelem <> 0 THEN format_type(t.typelem, NULL) END),
				('array', CASE WHEN t.typarray <> 0 THEN format_type(t.typarray, NULL) END),
				('io', concat_ws(' ', t.typinput, t.typoutput, t.typreceive, t.typsend, t.typmodin,
								 t.typmodout, t.typanalyze, t.typsubscript)),
				('align', t.typalign::text),
				('storage', t.typstorage::text),
				('not null', t.typnotnull::text),
				('base type', CASE WHEN t.typbasetype <> 0 THEN format_type(t.typbasetype, t.typtypmod) END),
				('dimensions', t.typndims::text),
				('collation', co.collname::text),
				('default', t.typdefault),
				('enum labels', (SELECT string_agg(quote_literal(e.enumlabel), ',' ORDER BY e.enumsortorder)
								 FROM pg_enum e WHERE e.enumtypid = t.oid)),
				('owner', pg_get_userbyid(t.typowner)::text),
				('acl', ACL(t.typacl))) x(prop, val)
	-- operators and casts of the extension
	UNION ALL SELECT 'operator ' || i.identity, 'definition',
			concat_ws(' ', o.oprkind, o.oprcode::regprocedure, format_type(o.oprresult, NULL), o.oprcom::regoperator,
					  o.oprnegate::regoperator, o.oprrest::regprocedure, o.oprjoin::regprocedure, o.oprcanmerge, o.oprcanhash)
		FROM objs x JOIN pg_operator o ON x.classid = 'pg_operator'::regclass AND o.oid = x.objid,
			pg_identify_object('pg_operator'::regclass, o.oid, 0) i
	UNION ALL SELECT 'cast ' || i.identity, 'definition',
			concat_ws(' ', c.castfunc::regprocedure, c.castcontext, c.castmethod)
		FROM members m JOIN pg_cast c ON m.classid = 'pg_cast'::regclass AND c.oid = m.objid,
			pg_identify_object('pg_cast'::regclass, c.oid, 0) i
	-- event triggers of the database
	UNION ALL SELECT 'event trigger ' || quote_ident(e.evtname), 'definition',
			concat_ws(' ', e.evtevent, pg_get_userbyid(e.evtowner), e.evtfoid::regprocedure, e.evtenabled, e.evttags::text)
		FROM pg_event_trigger e
	-- automatic and internal dependencies (a sequence owned by a column, an
	-- index by its constraint): what an upgrade's ALTERs may set differently
	UNION ALL SELECT 'dependency of ' || i.type || ' ' || i.identity, 'on ' || r.type || ' ' || r.identity, d.deptype::text
		FROM pg_depend d JOIN everything e ON e.classid = d.classid AND e.objid = d.objid,
			pg_identify_object(d.classid, d.objid, d.objsubid) i,
			pg_identify_object(d.refclassid, d.refobjid, d.refobjsubid) r
		WHERE d.deptype IN ('a', 'i')
	-- privileges pg_dump restores for the extension's objects
	UNION ALL SELECT 'initial privileges ' || i.type || ' ' || i.identity, ip.privtype::text, ACL(ip.initprivs)
		FROM pg_init_privs ip JOIN everything e ON e.classid = ip.classoid AND e.objid = ip.objoid,
			pg_identify_object(ip.classoid, ip.objoid, ip.objsubid) i
	-- comments and security labels, of columns too
	UNION ALL SELECT 'comment on ' || i.type || ' ' || i.identity, 'comment', dsc.description
		FROM pg_description dsc JOIN everything e ON e.classid = dsc.classoid AND e.objid = dsc.objoid,
			pg_identify_object(dsc.classoid, dsc.objoid, dsc.objsubid) i
	UNION ALL SELECT 'security label on ' || i.type || ' ' || i.identity, sl.provider, sl.label
		FROM pg_seclabel sl JOIN everything e ON e.classid = sl.classoid AND e.objid = sl.objoid,
			pg_identify_object(sl.classoid, sl.objoid, sl.objsubid) i)
SELECT obj || ' | ' || prop || ' = '
	|| replace(replace(coalesce(val, '(null)'), E'\\', E'\\\\'), E'\n', E'\\n')
FROM lines
ORDER BY 1;
SQL
	# An ACL as sorted grantee=privilege[*]/grantor items with role names:
	# 'default' for the built-in default (NULL), 'none' for an empty one.
	$sql =~ s{ACL\(([\w.]+)\)}{CASE WHEN $1 IS NULL THEN 'default' ELSE coalesce((SELECT string_agg(g, ' ' ORDER BY g) FROM (SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee)::text END || '=' || a.privilege_type || CASE WHEN a.is_grantable THEN '*' ELSE '' END || '/' || pg_get_userbyid(a.grantor) AS g FROM aclexplode($1) a) acl), 'none') END}g;
	return $node->safe_psql($db, $sql);
}

# The lines of two catalog snapshots that differ, '-' for only in the first
# and '+' for only in the second; empty when they are identical.
sub catalog_diff
{
	my ($first, $second) = @_;
	my (%in_first, %in_second);
	$in_first{$_}++ for split /\n/, $first;
	$in_second{$_}++ for split /\n/, $second;
	my @diff = sort { substr($a, 2) cmp substr($b, 2) || $a cmp $b }
	  ((map { "- $_" } grep { !$in_second{$_} } keys %in_first),
		(map { "+ $_" } grep { !$in_first{$_} } keys %in_second));
	return join("\n", @diff);
}

# Run one of the tree checkers (test/meta_check.py, test/layout_check.py) on
# the tree $dir; returns its exit status and its output.
sub run_tree_checker
{
	my ($checker, $dir) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'python3', $checker, $dir ], '<', \undef, '>', \$out, '2>', \$err);
	return ($? >> 8, $out . $err);
}

# Write an executable /bin/sh script $name with $body into $dir; returns its path.
sub write_script
{
	my ($dir, $name, $body) = @_;
	my $path = "$dir/$name";
	open my $fh, '>', $path or die $!;
	print $fh "#!/bin/sh\n$body\n";
	close $fh;
	chmod 0700, $path;
	return $path;
}

# The KEK of a passphrase, salt and version as hex, computed outside
# PostgreSQL (Python's hashlib), to look for it in memory or files.
sub kek_hex
{
	my ($pass, $salt, $version) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run(
		[
			'/usr/bin/python3', '-c',
			'import hashlib, sys; print(hashlib.pbkdf2_hmac("sha256", sys.argv[1].encode(), sys.argv[2].encode() + int(sys.argv[3]).to_bytes(4, "big"), 600000).hex())',
			$pass, $salt, $version
		],
		'>', \$out, '2>', \$err) or die "python3 failed: $err";
	chomp $out;
	return $out;
}

# postgresql.conf lines that turn on every knob that keeps statement text:
# core statement logging, pgaudit, pg_stat_statements and auto_explain
# (the redaction tests add their own on top).
sub statement_text_settings
{
	return q{
log_statement = 'all'
log_min_duration_statement = 0
log_min_error_statement = info
log_parameter_max_length = -1
log_parameter_max_length_on_error = -1
pgaudit.log = 'all'
pgaudit.log_parameter = on
pgaudit.log_relation = on
pg_stat_statements.track = all
pg_stat_statements.track_utility = on
auto_explain.log_min_duration = 0
auto_explain.log_analyze = on
auto_explain.log_verbose = on
auto_explain.log_nested_statements = on
};
}

# A node for the redaction tests, not yet started: every channel that keeps
# statement text on (statement_text_settings), with its libraries preloaded
# in the recommended order, after $conf.
sub new_statement_text_node
{
	my ($name, $conf) = @_;
	return new_secretenv_node($name,
		preload => 'pg_stat_statements, pgaudit, auto_explain, secretenv',
		conf => $conf . statement_text_settings());
}

# SQL for two applications that share secretenv.secrets under row-level
# security: login roles app_a and app_b, readers and writers, each shown
# only the secrets whose names start with its own name and '/'.
sub two_tenants_sql
{
	return q{
CREATE ROLE app_a LOGIN IN ROLE secretenv_reader, secretenv_writer;
CREATE ROLE app_b LOGIN IN ROLE secretenv_reader, secretenv_writer;
ALTER TABLE secretenv.secrets ENABLE ROW LEVEL SECURITY;
-- starts_with, not LIKE 'app_a/%': in LIKE an underscore matches any character.
CREATE POLICY app_a ON secretenv.secrets TO app_a USING (starts_with(secret_name, 'app_a/'));
CREATE POLICY app_b ON secretenv.secrets TO app_b USING (starts_with(secret_name, 'app_b/'));
};
}

# The ERROR, DETAIL and HINT lines of psql's stderr $err, without psql's
# location prefix and with $name replaced by <name>: the same text for a
# secret hidden by row-level security and for an absent one.
sub error_lines
{
	my ($err, $name) = @_;
	my @lines = map { s/^psql:[^:]*:\d+: //r } split /\n/, $err;
	@lines = grep { /^(ERROR|DETAIL|HINT):/ } @lines;
	s/\Q$name\E/<name>/g for @lines;
	return join("\n", @lines);
}

# 24 random hex digits: distinct plaintexts to look for in logs and views.
sub random_hex
{
	return join '', map { sprintf '%04x', int(rand(65536)) } 1 .. 6;
}

1;
