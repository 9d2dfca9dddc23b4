#!/usr/bin/perl
#
# vectors_to_tsv.pl
#	  Convert MLflow secrets-encryption vectors (JSON) into line records
#	  that test_crypto reads.
#
# usage: vectors_to_tsv.pl VECTOR_DIR > records.tsv
#
# One record per line, fields separated by tabs.  Every string and byte
# field is lowercase hex (UTF-8 bytes for text), so no field contains a tab
# or a newline; an empty field is an empty byte string and "-" marks a field
# the case does not have.  Records, in this order:
#
#	kek       name pass version kek rejects
#	secret    name pass version kek id secret_name aad plaintext value
#	          wrapped dek deterministic value_nonce wrap_nonce
#	          has_mask mask rejects
#	alt       name pass version kek id secret_name plaintext value wrapped
#	rotation  name old_pass old_version old_kek new_pass new_version new_kek
#	          id secret_name value wrapped_before wrapped_after dek
#	          plaintext after_opens_with_old before_opens_with_new rejects
#	negative  name pass version kek id secret_name value wrapped
#	          category failing_stage rejects
#	mask      name input masked
#	skip      name reason          (a case the core cannot take)
#
# An empty passphrase is replaced by MLflow's development passphrase, as
# MLflow does.  "rejects" is 1 for cases secretenv's SQL layer refuses
# (secretenv_rejects, e.g. kek_version 0); the core still computes them.
# Only string masks are emitted: object masks are tested in SQL.
#
# Uses core Perl modules only.

use strict;
use warnings;

use Encode qw(encode_utf8);
use JSON::PP;

my $DEV_PASSPHRASE = 'mlflow-default-kek-passphrase-for-development-only';

die "usage: $0 VECTOR_DIR\n" unless @ARGV == 1;
my $dir = $ARGV[0];

sub load
{
	my ($file) = @_;
	my $path = "$dir/$file";
	open(my $fh, '<:raw', $path) or die "$0: could not open $path: $!\n";
	local $/;
	my $text = <$fh>;
	close($fh);
	return JSON::PP->new->utf8->decode($text);
}

# Text as hex of its UTF-8 bytes; "-" when absent.
sub text_hex
{
	my ($s) = @_;
	return '-' unless defined $s;
	return unpack('H*', encode_utf8($s));
}

# A field that is already hex: lowercased, "-" when absent.
sub hex_field
{
	my ($h) = @_;
	return '-' unless defined $h;
	die "$0: not hex: $h\n" unless $h =~ /^[0-9a-fA-F]*$/;
	return lc($h);
}

sub passphrase_hex
{
	my ($p) = @_;
	return '-' unless defined $p;
	return text_hex($p eq '' ? $DEV_PASSPHRASE : $p);
}

# A kek_version the core can take (uint32), or undef.
sub version
{
	my ($v) = @_;
	return undef
	  unless defined $v && !ref($v) && $v =~ /^[0-9]+$/ && $v <= 4294967295;
	return "$v";
}

# A case with a version outside uint32 cannot reach the core: report it.
sub versions_ok
{
	my ($c, @v) = @_;
	return 1 unless grep { !defined } @v;
	emit('skip', name($c->{name}), 'kek_version outside 0..4294967295');
	return 0;
}

sub flag { return $_[0] ? '1' : '0'; }

# Case names are free text: keep them on one field.
sub name
{
	my ($n) = @_;
	$n = '(unnamed)' unless defined $n && $n ne '';
	$n = encode_utf8($n);
	$n =~ s/[\t\r\n]/ /g;
	return $n;
}

sub emit { print join("\t", @_), "\n"; }

binmode(STDOUT, ':raw');

for my $c (@{ load('kek.json')->{cases} })
{
	my $pass = $c->{effective_passphrase} // $c->{passphrase};
	my $ver = version($c->{kek_version});
	next unless versions_ok($c, $ver);
	emit('kek', name($c->{name}), passphrase_hex($pass),
		$ver, hex_field($c->{kek_hex}),
		flag($c->{secretenv_rejects}));
}

for my $c (@{ load('secrets.json')->{cases} })
{
	my $pass = passphrase_hex($c->{passphrase});
	my $ver = version($c->{kek_version});
	my $kek = hex_field($c->{kek_hex});
	next unless versions_ok($c, $ver);
	my $det = $c->{deterministic} ? 1 : 0;
	my $has_mask = (defined $c->{plaintext} && defined $c->{masked}
		  && !ref($c->{masked})) ? 1 : 0;

	emit('secret', name($c->{name}), $pass, $ver, $kek,
		text_hex($c->{secret_id}), text_hex($c->{secret_name}),
		hex_field($c->{aad_hex}), hex_field($c->{plaintext_utf8_hex}),
		hex_field($c->{encrypted_value_hex}),
		hex_field($c->{wrapped_dek_hex}), hex_field($c->{dek_hex}),
		$det,
		$det ? hex_field($c->{value_nonce_hex}) : '-',
		$det ? hex_field($c->{wrap_nonce_hex}) : '-',
		$has_mask, $has_mask ? text_hex($c->{masked}) : '-',
		flag($c->{secretenv_rejects}));

	for my $alt (@{ $c->{also_decrypts_with} // [] })
	{
		emit('alt', name($c->{name}), $pass, $ver, $kek,
			text_hex($alt->{secret_id}), text_hex($alt->{secret_name}),
			hex_field($c->{plaintext_utf8_hex}),
			hex_field($c->{encrypted_value_hex}),
			hex_field($c->{wrapped_dek_hex}));
	}
}

for my $c (@{ load('rotation.json')->{cases} })
{
	my $old_ver = version($c->{old_version});
	my $new_ver = version($c->{new_version});
	next unless versions_ok($c, $old_ver, $new_ver);
	emit('rotation', name($c->{name}),
		passphrase_hex($c->{old_passphrase}), $old_ver,
		hex_field($c->{old_kek_hex}),
		passphrase_hex($c->{new_passphrase}), $new_ver,
		hex_field($c->{new_kek_hex}),
		text_hex($c->{secret_id}), text_hex($c->{secret_name}),
		hex_field($c->{encrypted_value_hex}),
		hex_field($c->{wrapped_dek_hex_before}),
		hex_field($c->{wrapped_dek_hex_after}),
		hex_field($c->{dek_hex}), hex_field($c->{plaintext_utf8_hex}),
		flag($c->{after_opens_with_old_kek}),
		flag($c->{before_opens_with_new_kek}),
		flag($c->{secretenv_rejects}));
}

for my $c (@{ load('negative.json')->{cases} })
{
	# Only the stage's first word matters ("unwrap_dek: GCM tag ...").
	my $stage = $c->{failing_stage} // '';
	$stage =~ s/[:\s].*//s;
	$stage = '-' if $stage eq '';
	my $category = $c->{category} // '-';
	$category =~ s/\s+/_/g;
	my $ver = version($c->{kek_version});
	next unless versions_ok($c, $ver);

	emit('negative', name($c->{name}),
		passphrase_hex($c->{passphrase}), $ver,
		hex_field($c->{kek_hex}),
		text_hex($c->{secret_id}), text_hex($c->{secret_name}),
		hex_field($c->{encrypted_value_hex}),
		hex_field($c->{wrapped_dek_hex}),
		$category, $stage, flag($c->{secretenv_rejects}));
}

for my $c (@{ load('mask.json')->{cases} })
{
	next unless ($c->{kind} // '') eq 'string';
	next if ref($c->{input}) || ref($c->{masked});
	emit('mask', name($c->{name}), text_hex($c->{input}),
		text_hex($c->{masked}));
}
