#!/usr/bin/env bash
# secretenv demo on a throwaway cluster.  As root on a fresh Debian 12
# machine: installs the packages it needs, builds and installs the
# extension, starts a temporary preloaded cluster as the postgres user,
# walks through create / mask / get / decrypt / rotate, then removes the
# cluster.  Usage:  bash test/demo.sh
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
if [ "$(id -u)" -ne 0 ]; then
	echo "demo.sh must run as root (it installs packages and the extension)." >&2
	exit 2
fi

bash "$top/test/install_deps.sh"
make -C "$top" -s clean >/dev/null
make -C "$top" -s
make -C "$top" -s install

bindir=$(pg_config --bindir)
dir=$(mktemp -d /tmp/secretenv-demo.XXXXXX)
chown postgres: "$dir"
port=$((20000 + RANDOM % 20000))
as_postgres() { runuser -u postgres -- "$@"; }
cleanup() {
	as_postgres "$bindir/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1 || true
	rm -rf "$dir"
}
trap cleanup EXIT

as_postgres "$bindir/initdb" -D "$dir/data" --encoding=UTF8 --no-locale -A trust >/dev/null
cat >>"$dir/data/postgresql.conf" <<CONF
port = $port
listen_addresses = ''
unix_socket_directories = '$dir'
shared_preload_libraries = 'secretenv'
secretenv.kek_passphrase = 'demo-passphrase-use-a-long-random-one-in-production'
secretenv.kek_version = 1
CONF
as_postgres "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null

sql() { as_postgres psql -X -h "$dir" -p "$port" -d postgres -v ON_ERROR_STOP=1 "$@"; }

echo "== CREATE EXTENSION and store three secrets"
sql -q <<'SQL'
CREATE EXTENSION secretenv;
SELECT secretenv.secret_create('openai-prod', 'sk-proj-4f9Qx2LmN8vR7tYz1Kp3Wq6Es0Da5Hb', 'openai', 'production key');
SELECT secretenv.secret_create('aws', '{"access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "region": "eu-west-1"}'::jsonb, 'aws');
SELECT secretenv.secret_create('stripe', 'sk_live_51HqLyjWDarjtT1zdp7dc');
SQL

echo "== What an admin page shows: masks only (secretenv.masked_secrets)"
sql -c "SELECT secret_name, masked_value, kek_version, provider FROM secretenv.masked_secrets ORDER BY secret_name"

echo "== What the application reads (secret_get, served from the credential cache)"
sql -c "SELECT secretenv.secret_get('openai-prod') AS openai, secretenv.secret_get('aws')::jsonb ->> 'region' AS aws_region"

echo "== The stored envelope and a stateless decrypt"
sql -c "SELECT secret_name, length(encrypted_value) AS value_bytes, length(wrapped_dek) AS wrapped_dek_bytes, kek_version,
               secretenv.secret_decrypt(encrypted_value, wrapped_dek, kek_version, secret_id, secret_name) AS decrypted
        FROM secretenv.secrets WHERE secret_name = 'stripe'"

echo "== A renamed row would no longer decrypt, so renaming is refused"
sql -c "UPDATE secretenv.secrets SET secret_name = 'renamed' WHERE secret_name = 'stripe'" 2>&1 | sed -n 1,2p || true

echo "== Rotation: new passphrase as version 2, the old one kept as previous, reload"
cat >>"$dir/data/postgresql.conf" <<CONF
secretenv.kek_passphrase = 'demo-passphrase-number-two-also-long-and-random'
secretenv.kek_version = 2
secretenv.kek_previous_passphrase = 'demo-passphrase-use-a-long-random-one-in-production'
secretenv.kek_previous_version = 1
CONF
as_postgres "$bindir/pg_ctl" -D "$dir/data" reload >/dev/null
for _ in $(seq 50); do
	[ "$(sql -Atc 'SELECT secretenv.current_kek_version()')" = 2 ] && break
	sleep 0.1
done
sql -c "SELECT secretenv.secret_rotate_all() AS rotated, secretenv.secret_rotate_all() AS rotated_again"
sql -c "SELECT secret_name, kek_version, left(value, 20) AS value_prefix FROM secretenv.decrypted_secrets ORDER BY secret_name"
sql -c "SELECT jsonb_pretty(secretenv.status() - 'cache') AS status"

echo "== Nothing of the plaintexts or passphrases reached the server log:"
for s in sk-proj-4f9Qx2LmN8vR7tYz1Kp3Wq6Es0Da5Hb sk_live_51HqLyjWDarjtT1zdp7dc demo-passphrase; do
	printf '   %-40s %s occurrences\n' "$s" "$(grep -c -- "$s" "$dir/server.log" || true)"
done
echo "demo finished; the throwaway cluster is removed."
