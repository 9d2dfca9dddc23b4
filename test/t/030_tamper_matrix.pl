
# Tamper matrix: every single-bit flip, every truncation, swapped values
# between rows, renamed AAD and wrong KEK versions, for secrets of varied
# sizes (0 to 4096 bytes, multibyte, JSON) with uuid and text ids under two
# configured KEK versions.  Each attempt must be rejected with the documented
# SQLSTATE, none may decrypt, and the backend must never crash.
#
# The attempts run server-side (one plpgsql call per secret, trapping the
# SQLSTATE of each) and are checked as counts per secret and category.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;

my $pass1 = 'tamper-matrix-passphrase-version-1-0123456789';
my $pass2 = 'tamper-matrix-passphrase-version-2-abcdefghij';

my $node = new_secretenv_node('tamper', conf => qq{
secretenv.kek_passphrase = '$pass1'
secretenv.kek_version = 1
});
$node->start;

my $started = $node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()');

$node->safe_psql('postgres', 'CREATE EXTENSION secretenv');

# Plaintexts: [label, SQL expression, is_json].  Sizes straddle the AES block
# (16) and the envelope overhead (28); multibyte ones cover 2-, 3- and 4-byte
# UTF-8.
my @plaintexts = (
	[ 'empty',       q{''},                                0 ],
	[ 'ascii-1',     q{'x'},                               0 ],
	[ 'ascii-7',     q{'sk-1234'},                         0 ],
	[ 'ascii-8',     q{'sk-12345'},                        0 ],
	[ 'ascii-15',    q{repeat('a', 15)},                   0 ],
	[ 'ascii-16',    q{repeat('b', 16)},                   0 ],
	[ 'ascii-17',    q{repeat('c', 17)},                   0 ],
	[ 'ascii-28',    q{repeat('d', 28)},                   0 ],
	[ 'ascii-51',    q{'sk-proj-' || repeat('Zq9', 14) || '1'}, 0 ],
	[ 'ascii-255',   q{repeat('k', 255)},                  0 ],
	[ 'ascii-4096',  q{repeat('0123456789abcdef', 256)},   0 ],
	[ 'utf8-2',      q{chr(233)},                          0 ],
	[ 'utf8-8',      q{repeat(chr(233), 4)},               0 ],
	[ 'utf8-cjk',    q{chr(26085) || chr(26412) || chr(35486) || '-key-' || chr(23494) || chr(30908)}, 0 ],
	[ 'utf8-emoji',  q{repeat(chr(128273), 13)},           0 ],
	[ 'utf8-mixed',  q{'sk-' || repeat(chr(252) || chr(8364) || chr(128273) || 'z', 20)}, 0 ],
	[ 'json-object', q{'{"api_key": "sk-abc123456789", "region": "eu-west-1"}'}, 1 ],
	[ 'json-empty',  q{'{}'},                                1 ],
);

# Every plaintext twice: under a uuid id and under a text id.  Half the
# secrets are written under KEK version 1, the rest (after the rotation of
# the configuration below) under version 2.
my @defs;
my $n = 0;
for my $k (0 .. $#plaintexts)
{
	for my $kind ('uuid', 'text')
	{
		$n++;
		my ($label, $expr, $is_json) = @{ $plaintexts[$k] };
		my $sid =
		  $kind eq 'uuid'
		  ? sprintf('%08x-%04x-4%03x-8%03x-%012x',
			0x5ec0000 + $n, 0xa000 + $k, $n, $k, 0xbeef0000 + $n)
		  : sprintf('ext-id-%02d', $n);
		my $phase = (($k + ($kind eq 'uuid' ? 0 : 1)) % 2) + 1;
		push @defs,
		  {
			n       => $n,
			label   => $label,
			expr    => $expr,
			is_json => $is_json,
			kind    => $kind,
			sid     => $sid,
			sname   => sprintf('tamper-secret-%02d-%s', $n, $label),
			phase   => $phase,
		  };
	}
}
cmp_ok(scalar(@defs), '>=', 20, 'at least 20 secrets in the matrix');

my $values = join(
	",\n",
	map {
		sprintf(
			"(%d, '%s', %s, '%s', '%s', %s, %d)",
			$_->{n}, $_->{kind}, $_->{is_json} ? 'true' : 'false',
			$_->{sid}, $_->{sname}, $_->{expr}, $_->{phase})
	} @defs);

$node->safe_psql(
	'postgres', qq{
CREATE SCHEMA tamper;
CREATE TABLE tamper.defs (
	n int PRIMARY KEY, kind text NOT NULL, is_json bool NOT NULL,
	sid text NOT NULL, sname text NOT NULL, pt text NOT NULL, phase int NOT NULL,
	expected text, ev bytea, wd bytea, ver int4);
INSERT INTO tamper.defs (n, kind, is_json, sid, sname, pt, phase) VALUES
$values;
-- what a decrypt must return: the text, or the JSON text of a jsonb
UPDATE tamper.defs SET expected = CASE WHEN is_json THEN pt::jsonb::text ELSE pt END;

CREATE FUNCTION tamper.seal(d tamper.defs) RETURNS secretenv.envelope
LANGUAGE plpgsql AS \$\$
BEGIN
	IF d.kind = 'uuid' AND d.is_json THEN
		RETURN secretenv.secret_encrypt(d.pt::jsonb, d.sid::uuid, d.sname);
	ELSIF d.kind = 'uuid' THEN
		RETURN secretenv.secret_encrypt(d.pt, d.sid::uuid, d.sname);
	ELSIF d.is_json THEN
		RETURN secretenv.secret_encrypt(d.pt::jsonb, d.sid, d.sname);
	ELSE
		RETURN secretenv.secret_encrypt(d.pt, d.sid, d.sname);
	END IF;
END
\$\$;

-- Every single-bit flip of a value, byte by byte.
CREATE FUNCTION tamper.bit_flips(v bytea) RETURNS SETOF bytea LANGUAGE sql AS \$\$
	SELECT set_byte(v, i, get_byte(v, i) # (1 << bit))
	FROM generate_series(0, length(v) - 1) i, generate_series(0, 7) bit
	ORDER BY i, bit
\$\$;

-- A decrypt through the overload of the secret's id type.
CREATE FUNCTION tamper.decrypt(ev bytea, wd bytea, ver int4, kind text, sid text, sname text)
RETURNS text LANGUAGE plpgsql AS \$\$
BEGIN
	IF kind = 'uuid' THEN
		RETURN secretenv.secret_decrypt(ev, wd, ver, sid::uuid, sname);
	END IF;
	RETURN secretenv.secret_decrypt(ev, wd, ver, sid, sname);
END
\$\$;

-- One decrypt attempt: 'decrypted', or the SQLSTATE of its error.
CREATE FUNCTION tamper.attempt(ev bytea, wd bytea, ver int4, kind text, sid text, sname text)
RETURNS text LANGUAGE plpgsql AS \$\$
BEGIN
	RETURN CASE WHEN tamper.decrypt(ev, wd, ver, kind, sid, sname) IS NULL THEN 'null' ELSE 'decrypted' END;
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE;
END
\$\$;

-- A decrypt that must succeed: 'match' when it returns the expected text.
CREATE FUNCTION tamper.control(ev bytea, wd bytea, ver int4, kind text, sid text,
							   sname text, expected text)
RETURNS text LANGUAGE plpgsql AS \$\$
BEGIN
	RETURN CASE WHEN tamper.decrypt(ev, wd, ver, kind, sid, sname) = expected THEN 'match' ELSE 'mismatch' END;
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE;
END
\$\$;

-- Every attempt against one secret, one row (category, outcome) each.
CREATE FUNCTION tamper.matrix(p_n int)
RETURNS TABLE (category text, outcome text) LANGUAGE plpgsql AS \$\$
DECLARE
	d tamper.defs;
	j tamper.defs;		-- another secret under the same KEK version
	x tamper.defs;		-- a secret under the other KEK version
	b bytea;
	v int4;
	other_id text;
BEGIN
	SELECT * INTO STRICT d FROM tamper.defs WHERE n = p_n;
	SELECT * INTO STRICT j FROM tamper.defs
	WHERE ver = d.ver AND n <> d.n ORDER BY n < d.n, n LIMIT 1;
	SELECT * INTO STRICT x FROM tamper.defs
	WHERE ver <> d.ver ORDER BY n < d.n, n LIMIT 1;

	-- positive controls: the untouched envelope decrypts to its plaintext
	category := 'control';
	outcome := tamper.control(d.ev, d.wd, d.ver, d.kind, d.sid, d.sname, d.expected);
	RETURN NEXT;
	IF d.kind = 'uuid' THEN
		-- a uuid is canonicalised: upper-case input is the same id
		outcome := tamper.control(d.ev, d.wd, d.ver, 'uuid', upper(d.sid), d.sname, d.expected);
		RETURN NEXT;
		-- and its canonical text form as a text id is the same AAD
		outcome := tamper.control(d.ev, d.wd, d.ver, 'text', d.sid, d.sname, d.expected);
		RETURN NEXT;
	END IF;

	-- every single-bit flip of encrypted_value, then of wrapped_dek
	category := 'flip_ev';
	FOR b IN SELECT f FROM tamper.bit_flips(d.ev) f LOOP
		outcome := tamper.attempt(b, d.wd, d.ver, d.kind, d.sid, d.sname);
		RETURN NEXT;
	END LOOP;
	category := 'flip_wd';
	FOR b IN SELECT f FROM tamper.bit_flips(d.wd) f LOOP
		outcome := tamper.attempt(d.ev, b, d.ver, d.kind, d.sid, d.sname);
		RETURN NEXT;
	END LOOP;

	-- every truncation (lengths 0 .. len-1), then one extension
	category := 'trunc_ev';
	FOR i IN 0 .. length(d.ev) - 1 LOOP
		outcome := tamper.attempt(substr(d.ev, 1, i), d.wd, d.ver, d.kind, d.sid, d.sname);
		RETURN NEXT;
	END LOOP;
	category := 'trunc_wd';
	FOR i IN 0 .. length(d.wd) - 1 LOOP
		outcome := tamper.attempt(d.ev, substr(d.wd, 1, i), d.ver, d.kind, d.sid, d.sname);
		RETURN NEXT;
	END LOOP;
	category := 'extend_ev';
	outcome := tamper.attempt(d.ev || '\\x00'::bytea, d.wd, d.ver, d.kind, d.sid, d.sname);
	RETURN NEXT;
	category := 'extend_wd';
	outcome := tamper.attempt(d.ev, d.wd || '\\x00'::bytea, d.ver, d.kind, d.sid, d.sname);
	RETURN NEXT;

	-- values swapped between rows of the same KEK version
	category := 'swap_same_version';
	outcome := tamper.attempt(j.ev, d.wd, d.ver, d.kind, d.sid, d.sname);
	RETURN NEXT;
	outcome := tamper.attempt(d.ev, j.wd, d.ver, d.kind, d.sid, d.sname);
	RETURN NEXT;
	outcome := tamper.attempt(j.ev, j.wd, j.ver, d.kind, d.sid, d.sname);
	RETURN NEXT;
	-- a wrapped DEK of the other KEK version under this row's version
	category := 'swap_other_version_wd';
	outcome := tamper.attempt(d.ev, x.wd, d.ver, d.kind, d.sid, d.sname);
	RETURN NEXT;
	-- a whole envelope of the other version (its own version) on this row
	category := 'swap_other_version_env';
	outcome := tamper.attempt(x.ev, x.wd, x.ver, d.kind, d.sid, d.sname);
	RETURN NEXT;

	-- renamed AAD: other name
	category := 'rename_name';
	FOREACH other_id IN ARRAY ARRAY[d.sname || 'x', j.sname, '', upper(d.sname),
									 d.sname || ' ']
	LOOP
		outcome := tamper.attempt(d.ev, d.wd, d.ver, d.kind, d.sid, other_id);
		RETURN NEXT;
	END LOOP;

	-- renamed AAD: other id
	category := 'rename_id';
	IF d.kind = 'uuid' THEN
		outcome := tamper.attempt(d.ev, d.wd, d.ver, 'uuid', gen_random_uuid()::text, d.sname);
		RETURN NEXT;
		-- last hex digit changed
		outcome := tamper.attempt(d.ev, d.wd, d.ver, 'uuid',
			left(d.sid, 35) || CASE WHEN right(d.sid, 1) = '0' THEN '1' ELSE '0' END, d.sname);
		RETURN NEXT;
		-- the upper-case text form is another text id
		outcome := tamper.attempt(d.ev, d.wd, d.ver, 'text', upper(d.sid), d.sname);
		RETURN NEXT;
		-- id and name exchanged
		outcome := tamper.attempt(d.ev, d.wd, d.ver, 'text', d.sname, d.sid);
		RETURN NEXT;
	ELSE
		FOREACH other_id IN ARRAY ARRAY[d.sid || 'x', substr(d.sid, 2), upper(d.sid), '', j.sid]
		LOOP
			outcome := tamper.attempt(d.ev, d.wd, d.ver, 'text', other_id, d.sname);
			RETURN NEXT;
		END LOOP;
		outcome := tamper.attempt(d.ev, d.wd, d.ver, 'text', d.sname, d.sid);
		RETURN NEXT;
	END IF;

	-- an id containing the AAD separator is refused outright
	category := 'id_with_separator';
	outcome := tamper.attempt(d.ev, d.wd, d.ver, 'text', d.sid || '|' || d.sname, '');
	RETURN NEXT;

	-- wrong version: the other configured KEK
	category := 'version_configured';
	outcome := tamper.attempt(d.ev, d.wd, 3 - d.ver, d.kind, d.sid, d.sname);
	RETURN NEXT;
	-- wrong version: no KEK configured
	category := 'version_unconfigured';
	FOREACH v IN ARRAY ARRAY[3, 4, 1000, 2147483647] LOOP
		outcome := tamper.attempt(d.ev, d.wd, v, d.kind, d.sid, d.sname);
		RETURN NEXT;
	END LOOP;
	-- not a version at all
	category := 'version_invalid';
	FOREACH v IN ARRAY ARRAY[0, -1] LOOP
		outcome := tamper.attempt(d.ev, d.wd, v, d.kind, d.sid, d.sname);
		RETURN NEXT;
	END LOOP;
END
\$\$;
});

# Phase 1 under KEK version 1.
$node->safe_psql('postgres', q{
UPDATE tamper.defs d SET (ev, wd, ver) =
	(SELECT (e).encrypted_value, (e).wrapped_dek, (e).kek_version
	 FROM (SELECT tamper.seal(d) AS e) s)
WHERE phase = 1});

# Then KEK version 2 current, version 1 previous.
ok(configure_rotation_keys($node, $pass2, $pass1),
	'configuration reloaded: current KEK version 2, previous 1');

$node->safe_psql('postgres', q{
UPDATE tamper.defs d SET (ev, wd, ver) =
	(SELECT (e).encrypted_value, (e).wrapped_dek, (e).kek_version
	 FROM (SELECT tamper.seal(d) AS e) s)
WHERE phase = 2});

is( $node->safe_psql(
		'postgres',
		q{SELECT string_agg(ver::text || ':' || count::text, ',' ORDER BY ver)
		  FROM (SELECT ver, count(*) FROM tamper.defs GROUP BY ver) v}),
	sprintf('1:%d,2:%d',
		scalar(grep { $_->{phase} == 1 } @defs),
		scalar(grep { $_->{phase} == 2 } @defs)),
	'secrets are split between KEK versions 1 and 2');

my %lens = map { split /\|/ } split /\n/,
  $node->safe_psql('postgres',
	'SELECT n, length(ev) || \':\' || length(wd) || \':\' || octet_length(expected) FROM tamper.defs');

my %total;
my $attempts = 0;
for my $d (@defs)
{
	my ($evlen, $wdlen, $ptlen) = split /:/, $lens{ $d->{n} };
	my $what = "secret $d->{n} ($d->{label}, $d->{kind} id, v"
	  . ($d->{phase}) . ", $ptlen plaintext bytes)";

	is($evlen, $ptlen + 28, "$what: encrypted_value is nonce || ciphertext || tag");
	is($wdlen, 60, "$what: wrapped_dek is 60 bytes");

	my %expected = (
		control           => { match  => ($d->{kind} eq 'uuid' ? 3 : 1) },
		flip_ev           => { '22S03' => 8 * $evlen },
		flip_wd           => { '22S02' => 8 * 60 },
		trunc_ev          => {
			'22S01' => ($evlen < 28 ? $evlen : 28),
			($evlen > 28 ? ('22S03' => $evlen - 28) : ())
		},
		trunc_wd               => { '22S01' => 60 },
		extend_ev              => { '22S03' => 1 },
		extend_wd              => { '22S01' => 1 },
		swap_same_version      => { '22S03' => 3 },
		swap_other_version_wd  => { '22S02' => 1 },
		swap_other_version_env => { '22S03' => 1 },
		rename_name            => { '22S03' => 5 },
		rename_id => { '22S03' => ($d->{kind} eq 'uuid' ? 4 : 6) },
		id_with_separator    => { '22023' => 1 },
		version_configured   => { '22S02' => 1 },
		version_unconfigured => { '22S04' => 4 },
		version_invalid      => { '22023' => 2 },
	);

	my $out = $node->safe_psql('postgres',
		"SELECT category, outcome, count(*) FROM tamper.matrix($d->{n}) GROUP BY 1, 2 ORDER BY 1, 2"
	);
	my %got;
	for my $line (split /\n/, $out)
	{
		my ($cat, $outcome, $count) = split /\|/, $line;
		$got{$cat}{$outcome} = $count;
		$total{$cat}{$outcome} += $count;
		$attempts += $count;
	}
	for my $cat (sort keys %expected)
	{
		is_deeply($got{$cat} // {}, $expected{$cat},
			"$what: $cat rejected as documented");
	}
	is_deeply([ sort grep { !exists $expected{$_} } keys %got ],
		[], "$what: no unexpected category");
}

my $decrypted = 0;
for my $cat (keys %total)
{
	next if $cat eq 'control';
	$decrypted += ($total{$cat}{decrypted} // 0) + ($total{$cat}{null} // 0);
}
is($decrypted, 0, 'no tampered input decrypted');

# Summary figures for docs/testing.md (Reliability).
sub sum_cat
{
	my $total = 0;
	for my $cat (@_)
	{
		$total += $_ for values %{ $total{$cat} // {} };
	}
	return $total;
}
diag(sprintf('tamper matrix: %d secrets, %d attempts', scalar(@defs), $attempts));
diag(sprintf('  bit flips rejected: %d (encrypted_value %d -> 22S03, wrapped_dek %d -> 22S02)',
	($total{flip_ev}{'22S03'} // 0) + ($total{flip_wd}{'22S02'} // 0),
	$total{flip_ev}{'22S03'} // 0, $total{flip_wd}{'22S02'} // 0));
diag(sprintf('  truncations/extensions rejected: %d (22S01 %d, 22S03 %d)',
	sum_cat(qw(trunc_ev trunc_wd extend_ev extend_wd)),
	(map { my $s = $_; my $t = 0; $t += $total{$_}{$s} // 0 for qw(trunc_ev trunc_wd extend_ev extend_wd); $t } ('22S01', '22S03'))));
diag(sprintf('  swaps rejected: %d', sum_cat(qw(swap_same_version swap_other_version_wd swap_other_version_env))));
diag(sprintf('  renamed AAD rejected: %d', sum_cat(qw(rename_name rename_id id_with_separator))));
diag(sprintf('  wrong versions rejected: %d (configured 22S02 %d, unconfigured 22S04 %d, invalid 22023 %d)',
	sum_cat(qw(version_configured version_unconfigured version_invalid)),
	$total{version_configured}{'22S02'} // 0,
	$total{version_unconfigured}{'22S04'} // 0,
	$total{version_invalid}{'22023'} // 0));
diag(sprintf('  positive controls decrypted: %d', $total{control}{match} // 0));

# The same faults on the managed table: verify_secrets() names each row and
# check, secret_get() raises the documented SQLSTATE, untouched rows still
# decrypt.
$node->safe_psql('postgres', q{
SELECT secretenv.secret_create('store-ok', 'sk-untouched-value-0001');
SELECT secretenv.secret_create('store-flip-ev', 'sk-flipped-value-0002');
SELECT secretenv.secret_create('store-flip-wd', 'sk-flipped-dek-0003');
SELECT secretenv.secret_create('store-trunc', 'sk-truncated-0004');
SELECT secretenv.secret_create('store-swap', 'sk-swapped-0005');
SELECT secretenv.secret_create('store-version', 'sk-version-0006');
UPDATE secretenv.secrets SET encrypted_value = set_byte(encrypted_value, 20, get_byte(encrypted_value, 20) # 4)
	WHERE secret_name = 'store-flip-ev';
UPDATE secretenv.secrets SET wrapped_dek = set_byte(wrapped_dek, 59, get_byte(wrapped_dek, 59) # 128)
	WHERE secret_name = 'store-flip-wd';
UPDATE secretenv.secrets SET wrapped_dek = substr(wrapped_dek, 1, 59)
	WHERE secret_name = 'store-trunc';
UPDATE secretenv.secrets SET encrypted_value =
	(SELECT encrypted_value FROM secretenv.secrets WHERE secret_name = 'store-ok')
	WHERE secret_name = 'store-swap';
UPDATE secretenv.secrets SET kek_version = 9 WHERE secret_name = 'store-version';
});
is( $node->safe_psql(
		'postgres',
		q{SELECT string_agg(secret_name || ':' || kek_version || ':' || failed_check, E'\n' ORDER BY secret_name)
		  FROM secretenv.verify_secrets()}),
	join("\n",
		'store-flip-ev:2:AAD mismatch or tampered value',
		'store-flip-wd:2:wrong KEK or corrupted wrapped DEK',
		'store-swap:2:AAD mismatch or tampered value',
		'store-trunc:2:malformed envelope',
		'store-version:9:no KEK configured for this version'),
	'verify_secrets() lists each tampered row with its failed check, and only those');

my %get_expect = (
	'store-flip-ev' => '22S03',
	'store-flip-wd' => '22S02',
	'store-trunc'   => '22S01',
	'store-swap'    => '22S03',
	'store-version' => '22S04');
for my $name (sort keys %get_expect)
{
	my ($out, $err) = ('', '');
	$node->psql(
		'postgres', "SELECT secretenv.secret_get('$name')",
		stdout       => \$out,
		stderr       => \$err,
		on_error_stop => 1,
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	like($err, qr/ERROR:  $get_expect{$name}:/,
		"secret_get('$name') fails with $get_expect{$name}");
	is($out, '', "secret_get('$name') returns nothing");
}
is($node->safe_psql('postgres', q{SELECT secretenv.secret_get('store-ok')}),
	'sk-untouched-value-0001', 'the untouched row still decrypts');

# The backend never crashed: same postmaster, no crash in the log.
is($node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()'),
	$started, 'server alive, never restarted');
my $log = slurp_file($node->logfile);
unlike($log, qr/terminated by signal/, 'no backend terminated by a signal');
unlike($log, qr/all server processes terminated; reinitializing/,
	'no crash-recovery cycle');

$node->stop;
done_testing();
