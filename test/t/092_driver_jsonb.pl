
# The drivers note of docs/primitives.md, checked with the real driver: psycopg2's Json()
# sends its value as an untyped literal, so secret_create(%s, %s) picks the
# text overload (a text secret, masked as one string); %s::jsonb picks the
# jsonb overload (a structured secret, masked per key).  Both read back as
# the same JSON text.

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;
use Test::More;

my $python = '/usr/bin/python3';
plan skip_all => "$python with psycopg2 is not available"
  unless -x $python && system($python, '-c', 'import psycopg2') == 0;

my $node = new_secretenv_node('driver',
	conf => "secretenv.kek_passphrase = 'driver-note-passphrase-0123456789abcdef'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION secretenv');

my $program = <<'PY';
import sys
import psycopg2
from psycopg2.extras import Json

conn = psycopg2.connect(sys.argv[1])
conn.autocommit = True
cur = conn.cursor()
creds = {"user": "svc-driver", "password": "pw-0123456789abcdef"}
cur.execute("SELECT secretenv.secret_create(%s, %s)", ("as-json-adapter", Json(creds)))
cur.execute("SELECT secretenv.secret_create(%s, %s::jsonb)", ("as-jsonb-cast", Json(creds)))
cur.execute("SELECT secretenv.secret_update(%s, %s::jsonb)", ("as-jsonb-cast", Json(dict(creds, password="pw-updated-0123456789"))))
print(cur.mogrify("%s", (Json(creds),)).decode())
PY

my ($out, $err) = ('', '');
my $ok = IPC::Run::run([ $python, '-c', $program, $node->connstr('postgres') ], '>', \$out, '2>', \$err);
ok($ok, 'the psycopg2 program ran') or diag($err);
like($out, qr/^'\{"user": "svc-driver", "password": "pw-0123456789abcdef"\}'$/m,
	'Json() is sent as a quoted literal with no type');

is($node->safe_psql('postgres',
		q{SELECT secret_name || ':' || jsonb_typeof(masked_value) FROM secretenv.masked_secrets ORDER BY secret_name}),
	"as-json-adapter:string\nas-jsonb-cast:object",
	'Json() alone stored a text secret (one masked string); %s::jsonb a structured one (masked per key)');
is($node->safe_psql('postgres', q{SELECT masked_value FROM secretenv.masked_secrets WHERE secret_name = 'as-jsonb-cast'}),
	'{"user": "svc...iver", "password": "pw-...6789"}', 'the jsonb secret is masked key by key, after the update');
is($node->safe_psql('postgres', q{SELECT secretenv.secret_get('as-json-adapter')::jsonb ->> 'user'}),
	'svc-driver', 'both read back as JSON text');
is($node->safe_psql('postgres', q{SELECT secretenv.secret_get('as-jsonb-cast')::jsonb ->> 'password'}),
	'pw-updated-0123456789', 'the %s::jsonb update replaced the structured value');

$node->stop;
done_testing();
