#
# 010_mlflow_vectors.pl
#	  secretenv against MLflow's own secrets-encryption vectors.
#
# Every case of every vector file (kek, secrets, rotation, negative, mask)
# in $SECRETENV_VECTORS (default test/vectors/mlflow) is checked through SQL
# on one preloaded UTF8 cluster with MLflow's KEK salt.  The files are read
# case by case: nothing here knows the sample's cases or their number.
#
# Key configurations are SIGHUP settings, so the cases are grouped by the
# KEKs they need (current and, for rotations, previous); each group writes
# secretenv_keys.conf (included from postgresql.conf), reloads, waits until a
# new connection sees the group's marker setting secretenv_test.generation,
# then runs all its cases in one psql script.  SQL helper functions trap
# errors and return 'ERR:<SQLSTATE>', so one script yields one result line
# per check, and every check gets its own assertion named after its case.
#
# The KEK cases cannot read a KEK from SQL: test/reference/mlflow_format.py
# seals a probe value under the vector's kek_hex, and secretenv, configured
# with the vector's passphrase and version, must open it.
#

use strict;
use warnings;

use Encode qw(encode_utf8);
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;
use Time::HiRes qw(usleep);

my $DEV_PASSPHRASE = 'mlflow-default-kek-passphrase-for-development-only';
my $MLFLOW_SALT = 'mlflow-secrets-kek-v1-2025';
my $MAX_PASSPHRASE_BYTES = 4096;    # secretenv.kek_passphrase's limit
my $UUID_RE = qr/\A[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\z/;
my $ANY_UUID_RE = qr/\A[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\z/i;

my $vector_dir = $ENV{SECRETENV_VECTORS} || 'test/vectors/mlflow';
my $json = JSON::PP->new->utf8->canonical;                  # bytes <-> data
my $json_chars = JSON::PP->new->canonical->allow_nonref;    # chars <-> data

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

sub load_vectors
{
	my ($file) = @_;
	return $json->decode(slurp_file("$vector_dir/$file"));
}

sub bool_text { return $_[0] ? 'true' : 'false'; }
sub effective { return (!defined $_[0] || $_[0] eq '') ? $DEV_PASSPHRASE : $_[0]; }

# Whether secretenv can be configured with this passphrase at all.
sub configurable
{
	my ($pass) = @_;
	return length(encode_utf8($pass)) <= $MAX_PASSPHRASE_BYTES && $pass !~ /\x00/;
}

# A decrypt call returning 'OK:<plaintext hex>' or 'ERR:<SQLSTATE>'.  The
# uuid overload for canonical lower-case UUIDs, the text overload otherwise,
# unless $form forces one.
sub dec_sql
{
	my ($ev_sql, $wd_sql, $version, $id, $name, $form) = @_;
	$form //= ($id =~ $UUID_RE) ? 'uuid' : 'text';
	return $form eq 'uuid'
	  ? "t_dec_uuid($ev_sql, $wd_sql, $version, " . sql_string($id) . "::uuid, " . sql_string($name) . ")"
	  : "t_dec_text($ev_sql, $wd_sql, $version, " . sql_string($id) . ", " . sql_string($name) . ")";
}

# Byte length of a hex string.
sub hex_len { return length($_[0]) / 2; }

# ---------------------------------------------------------------------------
# Work list.  A "config" is one key configuration: current (passphrase,
# version) and optionally previous.  Each holds SQL result lines and the
# checks to run on them.  $pre runs on the start-up configuration and holds
# what needs no KEK (masks, version 0).
# ---------------------------------------------------------------------------

my @configs;
my $pre = { label => 'start-up configuration', lines => [], checks => [] };
my $key_seq = 0;

sub query
{
	my ($cfg, $expr) = @_;
	my $key = 'r' . (++$key_seq);
	push @{ $cfg->{lines} },
	  "SELECT '$key' || chr(9) || coalesce(($expr)::text, 'NULL');";
	return $key;
}

sub check
{
	my ($cfg, $sub) = @_;
	push @{ $cfg->{checks} }, $sub;
}

sub same_kek_spec
{
	my ($a, $b) = @_;
	return defined $a && defined $b && $a->[0] eq $b->[0] && $a->[1] == $b->[1];
}

sub describe_config
{
	my ($cfg) = @_;
	my $d = "current v$cfg->{cur}[1]";
	$d .= $cfg->{cur}[0] eq '' ? ' (development passphrase)' : '';
	$d .= ", previous v$cfg->{prev}[1]" if $cfg->{prev};
	return $d;
}

# The configuration that has (passphrase, version) as its current or
# previous KEK, created if need be; returns (config, slot) or () when
# secretenv cannot be given that passphrase.
sub config_for_single
{
	my ($pass, $version) = @_;
	return () unless configurable($pass);
	for my $cfg (@configs)
	{
		return ($cfg, 'current') if same_kek_spec($cfg->{cur}, [ $pass, $version ]);
		return ($cfg, 'previous') if same_kek_spec($cfg->{prev}, [ $pass, $version ]);
	}
	my $cfg = { cur => [ $pass, $version ], lines => [], checks => [], rotate_rows => [] };
	push @configs, $cfg;
	return ($cfg, 'current');
}

sub config_for_pair
{
	my ($new_pass, $new_version, $old_pass, $old_version) = @_;
	return undef unless configurable($new_pass) && configurable($old_pass);
	for my $cfg (@configs)
	{
		return $cfg
		  if same_kek_spec($cfg->{cur}, [ $new_pass, $new_version ])
		  && same_kek_spec($cfg->{prev}, [ $old_pass, $old_version ]);
	}
	my $cfg = {
		cur => [ $new_pass, $new_version ],
		prev => [ $old_pass, $old_version ],
		lines => [],
		checks => [],
		rotate_rows => []
	};
	push @configs, $cfg;
	return $cfg;
}

sub skip_case
{
	my ($name, $reason) = @_;
  SKIP:
	{
		skip "$name: $reason", 1;
	}
}

# ---------------------------------------------------------------------------
# The vectors
# ---------------------------------------------------------------------------

my %vectors;
for my $file (qw(secrets.json rotation.json negative.json kek.json mask.json))
{
	ok(-f "$vector_dir/$file", "vector file $file present in $vector_dir")
	  or BAIL_OUT("no $file in $vector_dir");
	$vectors{$file} = load_vectors($file);
	my $n = scalar @{ $vectors{$file}{cases} };
	ok($n > 0, "$file has cases");
	diag("$file: $n cases");
}

# Rotation groups first: single-KEK cases can then share their reloads.

# --- rotation.json ---------------------------------------------------------
for my $c (@{ $vectors{'rotation.json'}{cases} })
{
	my $n = "rotation/$c->{name}";
	my $pt = lc($c->{plaintext_utf8_hex} // '');
	my ($ev, $before, $after) =
	  map { sql_string(lc $_) } @$c{qw(encrypted_value_hex wrapped_dek_hex_before wrapped_dek_hex_after)};
	my ($id, $sname) = ($c->{secret_id}, $c->{secret_name});
	my ($oldv, $newv) = ($c->{old_version}, $c->{new_version});

	if ($oldv < 1 || $newv < 1)
	{
		# MLflow accepts version 0; secretenv's versions start at 1.  Each
		# side: [ version, passphrase, wrapped DEK, what is refused below
		# version 1 and how it is called, what opens from version 1 ].
		my @sides = (
			[ $oldv, $c->{old_passphrase}, $before, "t_rewrap($before, $oldv)",
				"re-wrap from version $oldv rejected", 'before-rotation envelope decrypts' ],
			[ $newv, $c->{new_passphrase}, $after, dec_sql($ev, $after, $newv, $id, $sname),
				"version $newv rejected", "MLflow's re-wrapped DEK decrypts" ]);
		for my $side (@sides)
		{
			my ($v, $passphrase, $wrapped, $refused_sql, $refused, $opens) = @$side;
			if ($v < 1)
			{
				my $k = query($pre, $refused_sql);
				check($pre, sub { is($_[0]{$k}, 'ERR:22023', "$n: $refused (22023)") });
				next;
			}
			my ($cfg) = config_for_single($passphrase, $v);
			next unless $cfg;
			my $k = query($cfg, dec_sql($ev, $wrapped, $v, $id, $sname));
			check($cfg, sub { is($_[0]{$k}, "OK:$pt", "$n: $opens with version $v") });
		}
		next;
	}

	my $cfg;
	if ($oldv == $newv)
	{
		if (effective($c->{old_passphrase}) ne effective($c->{new_passphrase}))
		{
			skip_case($n, "old and new KEK are both version $oldv: secretenv cannot configure two KEKs of one version");
			next;
		}
		($cfg) = config_for_single($c->{new_passphrase}, $newv);
	}
	else
	{
		$cfg = config_for_pair($c->{new_passphrase}, $newv, $c->{old_passphrase}, $oldv);
	}
	if (!$cfg)
	{
		skip_case($n, "a passphrase longer than $MAX_PASSPHRASE_BYTES bytes cannot be configured");
		next;
	}

	my $k_before = query($cfg, dec_sql($ev, $before, $oldv, $id, $sname));
	my $k_after = query($cfg, dec_sql($ev, $after, $newv, $id, $sname));
	# Re-wrap, then open the value with the new wrapped DEK and check it.
	my $k_rewrap = query($cfg,
		"(SELECT CASE WHEN w LIKE 'OK:%' THEN w || ';' || "
		  . dec_sql($ev, 'substr(w, 4)', $newv, $id, $sname)
		  . " || ';' || t_opens(substr(w, 4), $newv) ELSE w END FROM (SELECT t_rewrap($before, $oldv) AS w) s)"
	);
	my $k_before_new = query($cfg, "t_opens($before, $newv)");
	my $k_after_old = query($cfg, "t_opens($after, $oldv)");
	my $k_after_new = query($cfg, "t_opens($after, $newv)");

	check(
		$cfg,
		sub {
			my ($r) = @_;
			is($r->{$k_before}, "OK:$pt", "$n: before-rotation envelope decrypts with old version $oldv");
			is($r->{$k_after}, "OK:$pt", "$n: MLflow's re-wrapped DEK decrypts with new version $newv");
			my ($w, $dec, $opens) = split /;/, ($r->{$k_rewrap} // ''), 3;
			like($w // '', qr/\AOK:[0-9a-f]{120}\z/, "$n: secret_rewrap returns a 60-byte wrapped DEK");
			isnt(substr($w // '', 3), lc $c->{wrapped_dek_hex_before}, "$n: re-wrapped DEK differs from the input");
			is($dec, "OK:$pt", "$n: secretenv's re-wrapped DEK opens the unchanged encrypted_value with version $newv");
			is($opens, 'true', "$n: kek_opens(re-wrapped DEK, $newv)");
			is($r->{$k_before_new}, bool_text($c->{before_opens_with_new_kek}),
				"$n: before_opens_with_new_kek is " . bool_text($c->{before_opens_with_new_kek}))
			  if defined $c->{before_opens_with_new_kek};
			is($r->{$k_after_old}, bool_text($c->{after_opens_with_old_kek}),
				"$n: after_opens_with_old_kek is " . bool_text($c->{after_opens_with_old_kek}))
			  if defined $c->{after_opens_with_old_kek};
			is($r->{$k_after_new}, bool_text($c->{after_opens_with_new_kek}),
				"$n: after_opens_with_new_kek is " . bool_text($c->{after_opens_with_new_kek}))
			  if defined $c->{after_opens_with_new_kek};
		});

	# Rows MLflow wrote, rotated by secret_rotate_all (uuid ids only).
	if ($id =~ $UUID_RE && $oldv != $newv)
	{
		if (grep { $_->{secret_id} eq $id || $_->{secret_name} eq $sname } @{ $cfg->{rotate_rows} })
		{
			diag("$n: secret_id or secret_name already used in its rotation group; not added to secret_rotate_all's rows");
		}
		else
		{
			push @{ $cfg->{rotate_rows} }, $c;
		}
	}
}

# --- secrets.json ----------------------------------------------------------

# Mask checks for one plaintext: string masks as exact text, object masks
# as jsonb equality.
sub add_mask_checks
{
	my ($cfg, $n, $pt_sql, $masked, $column) = @_;
	if (ref $masked eq 'HASH')
	{
		my $k = query($cfg, "t_mask_obj($pt_sql, " . sql_string($json_chars->encode($masked)) . ")");
		check($cfg, sub { is($_[0]{$k}, 'EQUAL', "$n: secret_mask(jsonb) equals masked") });
	}
	elsif (defined $masked)
	{
		my $k = query($cfg, "t_mask_text($pt_sql)");
		check($cfg, sub { is($_[0]{$k}, 'OK:' . hex_utf8($masked), "$n: secret_mask(text) equals masked") });
	}
	if (defined $column)
	{
		my $stored = $json_chars->decode($column);
		my $fn = ref $stored eq 'HASH' ? 't_mask_obj' : 't_mask_str_json';
		my $k = query($cfg, "$fn($pt_sql, " . sql_string($column) . ")");
		check($cfg, sub { is($_[0]{$k}, 'EQUAL', "$n: masked_value_column equals our mask as jsonb") });
	}
}

for my $c (@{ $vectors{'secrets.json'}{cases} })
{
	my $n = "secrets/$c->{name}";
	my $pt = lc $c->{plaintext_utf8_hex};
	my ($ev, $wd) = map { sql_string(lc $_) } @$c{qw(encrypted_value_hex wrapped_dek_hex)};
	my ($id, $sname, $v) = @$c{qw(secret_id secret_name kek_version)};
	my $pt_sql = "convert_from(decode('$pt', 'hex'), 'UTF8')";

	my $expect_state;
	$expect_state = '22023' if $v < 1 || index($id, '|') >= 0;
	my $rejects = $c->{secretenv_rejects} || $v < 1 || defined $expect_state;

	my ($cfg) = $v >= 1 ? config_for_single($c->{passphrase}, $v) : ($pre);
	if (!$cfg)
	{
		skip_case($n, "a passphrase longer than $MAX_PASSPHRASE_BYTES bytes cannot be configured");
		next;
	}

	my $k = query($cfg, dec_sql($ev, $wd, $v, $id, $sname));
	if (defined $expect_state)
	{
		check($cfg, sub { is($_[0]{$k}, "ERR:$expect_state", "$n: rejected with $expect_state") });
	}
	elsif ($rejects)
	{
		check($cfg, sub { like($_[0]{$k} // '', qr/\AERR:/, "$n: rejected (secretenv_rejects)") });
	}
	else
	{
		check($cfg, sub { is($_[0]{$k}, "OK:$pt", "$n: decrypts to plaintext_utf8_hex") });

		if ($id =~ $UUID_RE)
		{
			my $kt = query($cfg, dec_sql($ev, $wd, $v, $id, $sname, 'text'));
			check($cfg, sub { is($_[0]{$kt}, "OK:$pt", "$n: text-id overload decrypts too") });
		}
		elsif ($id =~ $ANY_UUID_RE)
		{
			# A uuid prints lower-case, so the AAD differs from MLflow's.
			my $ku = query($cfg, dec_sql($ev, $wd, $v, $id, $sname, 'uuid'));
			check($cfg, sub { is($_[0]{$ku}, 'ERR:22S03', "$n: upper-case id through the uuid overload fails the AAD (22S03)") });
		}
	}

	# Other (id, name) pairs with the same AAD bytes; an id with '|' is refused.
	my $i = 0;
	for my $alt (@{ $c->{also_decrypts_with} || [] })
	{
		$i++;
		my $ka = query($cfg, dec_sql($ev, $wd, $v, $alt->{secret_id}, $alt->{secret_name}));
		my $refused = $v < 1 || index($alt->{secret_id}, '|') >= 0;
		check($cfg, sub {
			is($_[0]{$ka}, $refused ? 'ERR:22023' : "OK:$pt",
				"$n: also_decrypts_with pair $i " . ($refused ? 'rejected (22023)' : 'decrypts'));
		});
	}
	add_mask_checks($cfg, $n, $pt_sql, $c->{masked}, $c->{masked_value_column});
}

# --- negative.json ---------------------------------------------------------
{
	my $file = $vectors{'negative.json'};
	my @originals = @{ $file->{valid_originals} || [] };
	diag('negative.json: ' . scalar(@originals) . ' valid originals');
	my $first = $originals[0] || {};
	for my $o (@originals)
	{
		my $n = 'negative/valid_originals/' . ($o->{secret} // $o->{secret_name});
		my $pass = $o->{passphrase} // $first->{passphrase};
		my $v = $o->{kek_version} // $first->{kek_version};
		my $pt = lc($o->{plaintext_utf8_hex} // hex_utf8($o->{plaintext}));
		my ($cfg) = config_for_single($pass, $v);
		if (!$cfg)
		{
			skip_case($n, 'passphrase cannot be configured');
			next;
		}
		my $k = query($cfg, dec_sql(sql_string(lc $o->{encrypted_value_hex}), sql_string(lc $o->{wrapped_dek_hex}),
				$v, $o->{secret_id}, $o->{secret_name}));
		check($cfg, sub { is($_[0]{$k}, "OK:$pt", "$n: decrypts to its plaintext") });
	}

	for my $c (@{ $file->{cases} })
	{
		my $n = "negative/$c->{name}";
		my ($id, $sname, $v) = @$c{qw(secret_id secret_name kek_version)};
		my $state =
			$v < 1 ? '22023'
		  : index($id, '|') >= 0 ? '22023'
		  : (hex_len($c->{wrapped_dek_hex}) != 60 || hex_len($c->{encrypted_value_hex}) < 28) ? '22S01'
		  : ($c->{failing_stage} // '') =~ /\Aunwrap/ ? '22S02'
		  : '22S03';
		my ($cfg) = $v >= 1 ? config_for_single($c->{passphrase}, $v) : ($pre);
		if (!$cfg)
		{
			skip_case($n, 'passphrase cannot be configured');
			next;
		}
		my $k = query($cfg, dec_sql(sql_string(lc $c->{encrypted_value_hex}), sql_string(lc $c->{wrapped_dek_hex}), $v, $id, $sname));
		check($cfg, sub { is($_[0]{$k}, "ERR:$state", "$n ($c->{category}): rejected with $state") });
	}
}

# --- kek.json --------------------------------------------------------------
{
	my $python = -x '/usr/bin/python3' ? '/usr/bin/python3' : 'python3';
	my $script = 'test/reference/mlflow_format.py';
	my @cases = @{ $vectors{'kek.json'}{cases} };
	my @requests;
	my $i = 0;
	for my $c (@cases)
	{
		$i++;
		push @requests,
		  {
			tag => $i,
			kek_hex => $c->{kek_hex},
			secret_id => sprintf('00000000-0000-4000-8000-%012x', $i),
			secret_name => "kek-probe-$c->{name}",
			plaintext_hex => hex_utf8("kek probe \x{2713} $c->{name}")
		  };
	}
	my $in = join('', map { $json->encode($_) . "\n" } @requests);
	my ($out, $err) = ('', '');
	my $ran = IPC::Run::run([ $python, $script, 'encrypt' ], '<', \$in, '>', \$out, '2>', \$err);
	ok($ran, "reference implementation seals the KEK probes") or diag($err);
	my %sealed = map { my $r = $json->decode($_); ($r->{tag} => $r) } split /\n/, $out;

	$i = 0;
	for my $c (@cases)
	{
		$i++;
		my $n = "kek/$c->{name}";
		my $req = $requests[ $i - 1 ];
		my $env = $sealed{$i} || { encrypted_value_hex => '', wrapped_dek_hex => '' };
		my $v = $c->{kek_version};
		my ($cfg, $slot) = $v >= 1 ? config_for_single($c->{passphrase}, $v) : ($pre, undef);
		if (!$cfg)
		{
			skip_case($n, "a passphrase longer than $MAX_PASSPHRASE_BYTES bytes cannot be configured");
			next;
		}
		my $k = query($cfg, dec_sql(sql_string($env->{encrypted_value_hex}), sql_string($env->{wrapped_dek_hex}),
				$v, $req->{secret_id}, $req->{secret_name}));
		if ($v < 1)
		{
			check($cfg, sub { is($_[0]{$k}, 'ERR:22023', "$n: version $v rejected (22023)") });
			next;
		}
		check($cfg, sub { is($_[0]{$k}, "OK:$req->{plaintext_hex}", "$n: configured passphrase and version $v give kek_hex") });

		my $field = $slot eq 'current' ? 'using_default_passphrase' : 'previous_using_default_passphrase';
		my $expect = $c->{using_default_passphrase} // ($c->{passphrase} eq '');
		my $kd = query($cfg, "secretenv.key_config()->>'$field'");
		check($cfg, sub { is($_[0]{$kd}, bool_text($expect), "$n: $field is " . bool_text($expect)) });
	}
}

# --- mask.json -------------------------------------------------------------
for my $c (@{ $vectors{'mask.json'}{cases} })
{
	my $n = "mask/$c->{name}";
	my $kind = $c->{kind} // '';
	if ($kind eq 'string')
	{
		my $in = sql_string($c->{input});
		my $k = query($pre, "t_mask_text($in)");
		check($pre, sub { is($_[0]{$k}, 'OK:' . hex_utf8($c->{masked}), "$n: secret_mask(text) equals masked") });
		if (defined $c->{input_codepoints} && defined $c->{input_utf8_bytes})
		{
			my $kl = query($pre, "char_length($in) || '/' || octet_length($in)");
			check($pre, sub { is($_[0]{$kl}, "$c->{input_codepoints}/$c->{input_utf8_bytes}", "$n: input reached SQL intact (code points/bytes)") });
		}
	}
	elsif ($kind eq 'dict')
	{
		add_mask_checks($pre, $n, sql_string($json_chars->encode($c->{input})), $c->{masked}, $c->{masked_value_column});
	}
	elsif ($kind eq 'non-string')
	{
		# Only ever a value inside an object.
		my $in = sql_string($json_chars->encode({ k => $c->{input} }));
		my $k = query($pre, "t_mask_obj($in, " . sql_string($json_chars->encode({ k => $c->{masked} })) . ")");
		check($pre, sub { is($_[0]{$k}, 'EQUAL', "$n: value inside an object masks to " . $json_chars->encode($c->{masked})) });
	}
	else
	{
		fail("$n: unknown kind '$kind'");
	}
}

# ---------------------------------------------------------------------------
# The cluster
# ---------------------------------------------------------------------------

my $node = new_secretenv_node('mlflow_vectors',
	keys_file => 1,
	conf => "secretenv.kek_salt = '$MLFLOW_SALT'\n");
$node->start;

$node->safe_psql('postgres', 'CREATE EXTENSION secretenv');
# The masks of JSON objects and of string secrets are compared as jsonb
# with the expected one: 'EQUAL', or 'DIFF:' and the mask.
my $mask_compared = "(SELECT CASE WHEN m = expected::jsonb THEN 'EQUAL' ELSE 'DIFF:' || m::text END FROM (SELECT %s AS m) mask)";
install_result_helpers($node,
	[ 't_rewrap(wd text, v int4)', "'OK:' || encode(secretenv.secret_rewrap(decode(wd, 'hex'), v), 'hex')" ],
	[ 't_opens(wd text, v int4)', "coalesce(secretenv.kek_opens(decode(wd, 'hex'), v)::text, 'NULL')" ],
	[ 't_mask_text(pt text)', "'OK:' || t_hex(secretenv.secret_mask(pt))" ],
	[ 't_mask_obj(pt text, expected text)', sprintf($mask_compared, 'secretenv.secret_mask(pt::jsonb)') ],
	[ 't_mask_str_json(pt text, expected text)', sprintf($mask_compared, 'to_jsonb(secretenv.secret_mask(pt))') ],
	[ 't_rotate_all()', "'OK:' || secretenv.secret_rotate_all()" ]);

# Run one script; returns { key => value }.  Statement errors are counted,
# not fatal, so one bad case cannot hide the others.
sub run_script
{
	my ($label, $lines) = @_;
	my ($out, $err) = ('', '');
	my $sql = "SET client_encoding = 'UTF8';\n" . join("\n", @$lines) . "\n";
	$node->psql('postgres', encode_utf8($sql), stdout => \$out, stderr => \$err, on_error_stop => 0);
	my @errors = grep { /ERROR:/ } split /\n/, $err;
	is(scalar(@errors), 0, "$label: script ran without SQL errors")
	  or diag(join("\n", @errors[ 0 .. ($#errors < 4 ? $#errors : 4) ]));
	my %r;
	for my $line (split /\n/, $out)
	{
		my ($k, $v) = split /\t/, $line, 2;
		$r{$k} = $v if defined $v;
	}
	return \%r;
}

my $generation = 0;

sub apply_config
{
	my ($cfg) = @_;
	$generation++;
	my $conf = "secretenv.kek_passphrase = " . conf_string($cfg->{cur}[0]) . "\n"
	  . "secretenv.kek_version = $cfg->{cur}[1]\n";
	if ($cfg->{prev})
	{
		$conf .= "secretenv.kek_previous_passphrase = " . conf_string($cfg->{prev}[0]) . "\n"
		  . "secretenv.kek_previous_version = $cfg->{prev}[1]\n";
	}
	# An empty passphrase is MLflow's "not configured": secretenv reads
	# such rows only while the development passphrase is allowed.
	$conf .= 'secretenv.allow_development_passphrase = '
	  . (grep({ $_ && $_->[0] eq '' } $cfg->{cur}, $cfg->{prev}) ? 'on' : 'off') . "\n";
	$conf .= "secretenv_test.generation = $generation\n";
	write_keys_file($node, $conf);
	$node->reload;

	my $seen = '';
	for (my $tries = 0; $tries < 1200; $tries++)
	{
		$seen = $node->safe_psql('postgres',
			"SELECT current_setting('secretenv_test.generation', true)");
		last if $seen eq $generation;
		usleep(50_000);
	}
	is($seen, $generation, "configuration $generation (" . describe_config($cfg) . ") reloaded");
}

# Everything that needs no particular KEK.
{
	my $r = run_script('start-up configuration', $pre->{lines});
	$_->($r) for @{ $pre->{checks} };
}

for my $cfg (@configs)
{
	apply_config($cfg);
	my $label = "configuration $generation";
	my $kc = query($cfg,
		"(secretenv.key_config()->>'current_version') || '/' || coalesce(secretenv.key_config()->>'previous_version', '-')");
	my $expect_kc = "$cfg->{cur}[1]/" . ($cfg->{prev} ? $cfg->{prev}[1] : '-');
	check($cfg, sub { is($_[0]{$kc}, $expect_kc, "$label: key_config shows versions $expect_kc") });

	# secret_rotate_all over rows MLflow wrote under the previous KEK.
	my @rows = @{ $cfg->{rotate_rows} };
	if (@rows)
	{
		my $oldv = $cfg->{prev}[1];
		my $newv = $cfg->{cur}[1];
		push @{ $cfg->{lines} }, 'DELETE FROM secretenv.secrets;',
		  'INSERT INTO secretenv.secrets (secret_id, secret_name, encrypted_value, wrapped_dek, kek_version) VALUES '
		  . join(",\n",
			map {
				'(' . sql_string($_->{secret_id}) . '::uuid, ' . sql_string($_->{secret_name}) . ", decode('"
				  . lc($_->{encrypted_value_hex}) . "', 'hex'), decode('"
				  . lc($_->{wrapped_dek_hex_before}) . "', 'hex'), $oldv)"
			} @rows)
		  . ';';
		my $k1 = query($cfg, 't_rotate_all()');
		my $k2 = query($cfg, 't_rotate_all()');
		my @row_keys;
		for my $c (@rows)
		{
			push @row_keys,
			  query($cfg,
				    "(SELECT encode(encrypted_value, 'hex') || ';' || kek_version || ';' || "
				  . "encode(wrapped_dek, 'hex') || ';' || "
				  . "t_dec_uuid(encode(encrypted_value, 'hex'), encode(wrapped_dek, 'hex'), kek_version, secret_id, secret_name)"
				  . " || ';' || t_get(secret_name) || ';' || t_opens(encode(wrapped_dek, 'hex'), $oldv)"
				  . " FROM secretenv.secrets WHERE secret_id = " . sql_string($c->{secret_id}) . '::uuid)');
		}
		my $kv = query($cfg, '(SELECT count(*) FROM secretenv.verify_secrets())');
		push @{ $cfg->{lines} }, 'DELETE FROM secretenv.secrets;';

		check(
			$cfg,
			sub {
				my ($r) = @_;
				my $count = scalar @rows;
				is($r->{$k1}, "OK:$count", "$label: secret_rotate_all re-wraps the $count rows MLflow wrote (v$oldv -> v$newv)");
				is($r->{$k2}, 'OK:0', "$label: a second secret_rotate_all finds nothing to do");
				for my $i (0 .. $#rows)
				{
					my $c = $rows[$i];
					my $n = "rotation/$c->{name} (secret_rotate_all)";
					my $pt = lc($c->{plaintext_utf8_hex} // '');
					my ($ev, $v, $wd, $dec, $get, $old_opens) = split /;/, ($r->{ $row_keys[$i] } // ''), 6;
					is($ev, lc $c->{encrypted_value_hex}, "$n: encrypted_value byte-identical");
					is($v, $newv, "$n: kek_version is now $newv");
					like($wd // '', qr/\A[0-9a-f]{120}\z/, "$n: wrapped_dek is 60 bytes");
					isnt($wd, lc $c->{wrapped_dek_hex_before}, "$n: wrapped_dek was replaced");
					is($dec, "OK:$pt", "$n: row decrypts with secret_decrypt");
					is($get, "OK:$pt", "$n: secret_get returns the plaintext");
					is($old_opens, 'false', "$n: the old KEK (v$oldv) does not open the new wrapped_dek");
				}
				is($r->{$kv}, '0', "$label: verify_secrets finds no failure after rotation");
			});
	}

	my $r = run_script($label, $cfg->{lines});
	$_->($r) for @{ $cfg->{checks} };
}

diag(scalar(@configs) . ' key configurations (reloads)');

$node->stop;
done_testing();
