#!/usr/bin/perl
#
# gen_corpus.pl
#	  Seed corpus for fuzz_envelope from the MLflow vectors.
#
# usage: gen_corpus.pl VECTOR_DIR OUT_DIR
#
# Writes one seed per valid envelope whose KEK is one of the harness's two
# (see fuzz_envelope.c for the input layout), so fuzzing starts from inputs
# that pass every check and mutates them from there, plus one seed for the
# seal-then-tamper mode.  Uses core Perl modules only.

use strict;
use warnings;

use Encode qw(encode_utf8);
use JSON::PP;

die "usage: $0 VECTOR_DIR OUT_DIR\n" unless @ARGV == 2;
my ($dir, $out) = @ARGV;

# The harness's KEKs, by index.
my %kek_index = (
	'c2b0846c9b96fbda4ec87d74943f0ca3c1c5fab5bc982eca27611bca1573f848' => 0,
	'9f4f63bec81efbc6c8dc625fa3ad57f44b255859d97a48fe4875cfaf5500aad2' => 1,
);
my $n = 0;

sub load
{
	my ($file) = @_;
	open(my $fh, '<:raw', "$dir/$file") or die "$0: $dir/$file: $!\n";
	local $/;
	my $text = <$fh>;
	close($fh);
	return JSON::PP->new->utf8->decode($text);
}

sub seed
{
	my ($control, $wrapped, $aad, $value) = @_;
	return if length($wrapped) > 255 || length($aad) > 255;
	my $path = sprintf('%s/seed-%03d', $out, $n++);
	open(my $fh, '>:raw', $path) or die "$0: $path: $!\n";
	print $fh pack('CCC', $control, length($wrapped), length($aad)),
	  $wrapped, $aad, $value;
	close($fh);
}

sub envelope
{
	my ($kek_hex, $id, $name, $value_hex, $wrapped_hex) = @_;
	return unless defined $kek_hex && exists $kek_index{ lc($kek_hex) };
	seed($kek_index{ lc($kek_hex) }, pack('H*', $wrapped_hex),
		encode_utf8($id . '|' . $name), pack('H*', $value_hex));
}

for my $c (@{ load('secrets.json')->{cases} })
{
	envelope($c->{kek_hex}, $c->{secret_id}, $c->{secret_name},
		$c->{encrypted_value_hex}, $c->{wrapped_dek_hex});
}
for my $c (@{ load('rotation.json')->{cases} })
{
	envelope($c->{old_kek_hex}, $c->{secret_id}, $c->{secret_name},
		$c->{encrypted_value_hex}, $c->{wrapped_dek_hex_before});
	envelope($c->{new_kek_hex}, $c->{secret_id}, $c->{secret_name},
		$c->{encrypted_value_hex}, $c->{wrapped_dek_hex_after});
}

# Mode 1: DEK 00..1f, value nonce of zeros, wrap nonce 00..0b, plaintext.
seed(2, "\x00\x2a", 'id|name',
	pack('C*', 0 .. 31) . ("\0" x 12) . pack('C*', 0 .. 11) . 'hello, world');

print "$0: wrote $n seeds to $out\n";
