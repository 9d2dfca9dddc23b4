
# Copyright (c) secretenv contributors
#
# A server whose OpenSSL offers no AES-256-GCM (EVP_CIPHER_fetch finds no
# implementation) reports it as 0A000 "no OpenSSL provider implements
# AES-256-GCM" with a hint about the OpenSSL configuration, not as 53200
# "out of memory".  The fault is made with an LD_PRELOAD shim whose
# EVP_CIPHER_fetch finds nothing for "AES-256-GCM" (every other algorithm,
# PBKDF2 included, comes from the real library), with and without preload:
# with preload the server still starts, with a WARNING in its log.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $dir = PostgreSQL::Test::Utils::tempdir();
open(my $fh, '>', "$dir/no_gcm.c") or die $!;
print $fh <<'EOC';
#define _GNU_SOURCE
#include <dlfcn.h>
#include <strings.h>
#include <openssl/evp.h>

EVP_CIPHER *
EVP_CIPHER_fetch(OSSL_LIB_CTX *ctx, const char *algorithm, const char *properties)
{
	EVP_CIPHER *(*real) (OSSL_LIB_CTX *, const char *, const char *) =
		(EVP_CIPHER *(*) (OSSL_LIB_CTX *, const char *, const char *)) dlsym(RTLD_NEXT, "EVP_CIPHER_fetch");

	if (algorithm != NULL && strcasecmp(algorithm, "AES-256-GCM") == 0)
		return NULL;
	return real(ctx, algorithm, properties);
}
EOC
close($fh);
system('cc', '-shared', '-fPIC', '-o', "$dir/no_gcm.so", "$dir/no_gcm.c", '-ldl') == 0
  or die 'could not build the shim';

for my $preload (0, 1)
{
	my $node = new_secretenv_node("aead_unavailable_$preload",
		preload => $preload,
		conf => "secretenv.kek_passphrase_command = 'echo aead-unavailable-passphrase-0123456789abcdef'\n");
	{
		local $ENV{LD_PRELOAD} = "$dir/no_gcm.so";
		$node->start;
	}
	my $what = $preload ? 'with preload' : 'without preload';
	$node->safe_psql('postgres', 'CREATE EXTENSION secretenv');
	my ($out, $err) = run_sql($node, 'postgres', q{SELECT secretenv.secret_create('n', 'value-0123456789')});
	like($err, qr/ERROR:  0A000: could not initialize encryption: no OpenSSL provider implements AES-256-GCM/,
		"$what: a write fails with 0A000 and says AES-256-GCM is missing");
	like($err, qr/HINT:  Check the OpenSSL configuration of the server/, '... with a hint about the OpenSSL configuration');
	unlike($err, qr/53200|out of memory/, '... and not as out of memory');
	if ($preload)
	{
		like(slurp_file($node->logfile),
			qr/WARNING:  secretenv could not create its AES-256-GCM context at server start/,
			'with preload the server starts and its log says why encryption will fail');
	}
	$node->stop;
}

done_testing();
