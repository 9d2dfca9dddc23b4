#!/usr/bin/env bash
#
# test/bench/run.sh — secretenv performance benchmark.
#
#     sudo bash test/bench/run.sh              # full run (several minutes)
#     sudo BENCH_QUICK=1 bash test/bench/run.sh  # smoke run, about 3 minutes
#     sudo PG_CONFIG=/path/to/pg_config bash test/bench/run.sh  # another major
#     sudo bash test/majors/bench.sh 18 CHROOT   # the major of a test/majors chroot
#
# Starts throwaway PostgreSQL clusters ($PG_CONFIG's major; the host's 15
# by default) as the postgres user (one with
# shared_preload_libraries = 'secretenv'; one without, for the connection
# rows; one preloaded with its keys from a passphrase command, for the key
# reload row), measures secretenv against pgcrypto and against plain SQL
# doing the same row work, prints a table and writes it as Markdown to
# $BENCH_OUT.  Everything lives in one mktemp directory that is removed,
# clusters stopped, on exit.
#
# Knobs (environment):
#   BENCH_ROWS         rows for the encrypt/decrypt scans     (200000; quick 20000)
#   BENCH_ROTATE_ROWS  rows in secretenv.secrets for rotation (1000000; quick 100000)
#   BENCH_PAR_ROWS     rows for the parallel decrypt scan    (400000; quick 40000)
#   BENCH_RUNS         interleaved runs; medians are reported (3)
#   BENCH_SECS         duration of each pgbench run, seconds  (10; quick 5)
#   BENCH_QUICK=1      smoke mode: the smaller quick defaults above
#   BENCH_OUT          Markdown copy of the table            (/tmp/secretenv-bench.md)
#   BENCH_NO_BUILD=1   benchmark the installed secretenv.so, do not make install
#   BENCH_ONLY         comma-separated rows to run (all): decrypt (decrypt and
#                      encrypt scans), parallel, connect, get (secret_get),
#                      audit (secret_get with the access audit), versions
#                      (secret_get and secret_update with kept versions), rls,
#                      rules (access rules), rotate (rotation and the connection
#                      test against its big store), reload (first read after a
#                      key reload); e.g. BENCH_ONLY=reload,rules.  The report
#                      shows the rows that ran.
#   BENCH_RELOAD_CONNS open connections for the reload row     (100)
#   BENCH_COMMIT       the commit to name in the report (git rev-parse; for a
#                      copy of the tree without .git, e.g. test/majors/bench.sh)
#
# Method.
#   - Timing is server-side: a PL/pgSQL helper (bench.measure) takes
#     clock_timestamp() just before and after EXECUTE of the statement.  That
#     times the executor's work and nothing else: no connection setup, no
#     client round trip, no result transfer, none of the latency noise that
#     psql's \timing includes and that is not small next to per-row costs
#     of a microsecond.  Each statement aggregates (sum(octet_length(f(..))))
#     so that one row, not N, leaves the server; octet_length is length() in
#     bytes, which costs the same for text and bytea (no character count).
#   - Before each timed statement the same session runs the same expression
#     over 100 rows, so catalog caches, plans, the library and secretenv's
#     once-per-backend key health check are warm and not in the timing.
#   - Every comparison is interleaved: run r times every variant, in an order
#     rotated from run to run; ratios are taken within a run (same table
#     state, same machine load) and the median over runs is reported, as is
#     the median of each per-row cost.
#   - Parallel query and JIT are off: the figures are per-row costs of one
#     backend, not of how many workers the planner happens to start.  One
#     row is the exception and says so: secret_decrypt over BENCH_PAR_ROWS
#     rows with two parallel workers (forced, and checked to launch) against
#     the same scan without workers.
#     fsync is off: the clusters are throwaway and disk flush latency is not
#     what is measured (WAL is still written and full-page writes are on).
#   - pgbench (connections, secret_get) reports transactions per second.  A
#     connection's cost is 1/tps with one client and -C (connect per
#     transaction, connection time included), measured in one-second slices
#     that alternate between the variants.  secret_get runs one client per
#     CPU, -M prepared, names drawn at random from 1000 stored secrets.
#   - The key reload row keeps BENCH_RELOAD_CONNS psql sessions open on a
#     cluster of its own and times each session's first secret_get after a
#     reload that adds a KEK version, inside the server as above and around
#     the client's round trip, against the same read without a reload; the
#     figure is the worst session's read (section 6 says more).
#
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

if [ "${BENCH_QUICK:-0}" = 1 ]; then
	rows=${BENCH_ROWS:-20000}
	rotate_rows=${BENCH_ROTATE_ROWS:-100000}
	par_rows=${BENCH_PAR_ROWS:-400000}
	secs=${BENCH_SECS:-5}
else
	rows=${BENCH_ROWS:-200000}
	rotate_rows=${BENCH_ROTATE_ROWS:-1000000}
	par_rows=${BENCH_PAR_ROWS:-400000}
	secs=${BENCH_SECS:-10}
fi
runs=${BENCH_RUNS:-3}
out=${BENCH_OUT:-/tmp/secretenv-bench.md}
reload_conns=${BENCH_RELOAD_CONNS:-100}
get_secrets=1000				# secrets that pgbench's secret_get picks from

for n in "$rows" "$rotate_rows" "$par_rows" "$runs" "$secs" "$reload_conns"; do
	case $n in '' | *[!0-9]* | 0) echo "bench: knobs must be positive integers" >&2; exit 2 ;; esac
done
if [ "$rows" -lt 1000 ]; then
	echo "bench: BENCH_ROWS must be at least 1000" >&2
	exit 2
fi

log() { printf '== %s\n' "$*" >&2; }

# The rows to run: BENCH_ONLY, or every row.
all_rows="decrypt parallel connect get audit versions rls rules rotate reload"
only=${BENCH_ONLY:-}
only=${only// /}
for row in ${only//,/ }; do
	case " $all_rows " in
		*" $row "*) ;;
		*) echo "bench: unknown row '$row' in BENCH_ONLY (rows: $all_rows)" >&2; exit 2 ;;
	esac
done
# wants ROW: whether ROW is to run.
wants() { [ -z "$only" ] || [[ ",$only," == *",$1,"* ]]; }

# --------------------------------------------------------------------------
# Dependencies and build (as root); the clusters themselves run as postgres.
# --------------------------------------------------------------------------
# Any major: PG_CONFIG chooses the server (e.g. /usr/lib/postgresql/18/bin/pg_config,
# also inside a chroot of test/majors/provision.sh).
PG_CONFIG=${PG_CONFIG:-pg_config}
pg_major=$("$PG_CONFIG" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
if [ "$(id -u)" -eq 0 ]; then
	# The host's packages are those of Debian 12 (PostgreSQL 15).
	[ "$pg_major" = 15 ] && bash "$repo/test/install_deps.sh"
	# pgbench ships with the client package; pgcrypto with the server (contrib).
	if [ ! -x "$("$PG_CONFIG" --bindir)/pgbench" ] ||
		[ ! -e "$("$PG_CONFIG" --sharedir)/extension/pgcrypto.control" ]; then
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q "postgresql-client-$pg_major" \
			$([ "$pg_major" = 15 ] && echo postgresql-contrib)
	fi
	if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
		log "building and installing secretenv for PostgreSQL $pg_major"
		make -s -C "$repo" PG_CONFIG="$PG_CONFIG" >/dev/null
		make -s -C "$repo" PG_CONFIG="$PG_CONFIG" install >/dev/null
	fi
	as_pg() { runuser -u postgres -- "$@"; }
	pg_user=postgres
else
	# Not root: no installs; the caller must own the clusters' directory.
	as_pg() { "$@"; }
	pg_user=$(id -un)
fi
pgbin=$("$PG_CONFIG" --bindir)
# The code measured: the commit built above, "+changes" if the work tree differs.
if [ -n "${BENCH_COMMIT:-}" ]; then
	commit=$BENCH_COMMIT
else
	commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
	if [ "$commit" != unknown ] && ! git -C "$repo" diff --quiet HEAD -- src sql Makefile 2>/dev/null; then
		commit="$commit+changes"
	fi
fi
for tool in initdb pg_ctl psql pgbench; do
	[ -x "$pgbin/$tool" ] || { echo "bench: $pgbin/$tool is missing" >&2; exit 2; }
done
command -v openssl >/dev/null || { echo "bench: the openssl command is missing" >&2; exit 2; }

# --------------------------------------------------------------------------
# Throwaway clusters.
# --------------------------------------------------------------------------
work=$(mktemp -d /tmp/secretenv-bench.XXXXXX)
chmod 700 "$work"
chown "$pg_user" "$work"
cd "$work"
clusters=()

cleanup() {
	local status=$? dir
	# On failure, show what the servers said before their logs go away.
	if [ "$status" -ne 0 ]; then
		for dir in "${clusters[@]}"; do
			echo "--- last lines of $(basename "$dir")'s server log:" >&2
			tail -n 15 "$dir.log" >&2 2>/dev/null || true
		done
	fi
	for dir in "${clusters[@]}"; do
		as_pg "$pgbin/pg_ctl" -D "$dir" -m immediate -w stop >/dev/null 2>&1 || true
	done
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A port no TCP listener uses and no other cluster's socket in our directory
# has.  The clusters listen on a Unix socket in $work only (listen_addresses
# is empty), so the port just names the socket and the shared memory key.
free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 40000))
		if [ ! -e "$work/.s.PGSQL.$p" ] &&
			! ss -Hltn "sport = :$p" 2>/dev/null | grep -q .; then
			echo "$p"
			return
		fi
	done
}

# Two KEKs for rotation: version 1 from pass_a, version 2 from pass_b.  Both
# are long random passphrases, never the built-in development one.
pass_a=$(openssl rand -hex 24)
pass_b=$(openssl rand -hex 24)

# passphrase_of VERSION: version 1 is always pass_a, version 2 pass_b; the
# reload row's versions 3 and up are pass_b with the version appended.
passphrase_of() {
	case $1 in
		1) echo "$pass_a" ;;
		2) echo "$pass_b" ;;
		*) echo "$pass_b-v$1" ;;
	esac
}

# write_keys DIR CUR_VERSION [PREV_VERSION]: the key configuration file that
# postgresql.conf includes.  A cluster without preload refuses a passphrase
# written in the configuration (every role could read it before the library
# loaded), so there the passphrases go into files that a passphrase command
# prints; so they do in a cluster whose postgresql.conf asks for it (the
# line "# bench: keys from the passphrase command").
write_keys() {
	local dir=$1 cur=$2 prev=${3:-0} v
	if grep -q "^shared_preload_libraries = ''" "$dir/postgresql.conf" ||
		grep -q "^# bench: keys from the passphrase command" "$dir/postgresql.conf"; then
		for ((v = 1; v <= (cur > 2 ? cur : 2); v++)); do
			passphrase_of "$v" >"$dir/kek_v$v"
			chown "$pg_user" "$dir/kek_v$v"
			chmod 600 "$dir/kek_v$v"
		done
		{
			echo "secretenv.kek_passphrase_command = 'cat $dir/kek_v%v'"
			echo "secretenv.kek_previous_version = $prev"
			echo "secretenv.kek_version = $cur"
		} >"$dir/secretenv_keys.conf"
	else
		{
			# Previous first: when it is the KEK that was current until now, the
			# postmaster copies it instead of running PBKDF2 again.
			if [ "$prev" -gt 0 ]; then
				echo "secretenv.kek_previous_passphrase = '$(passphrase_of "$prev")'"
			else
				echo "secretenv.kek_previous_passphrase = ''"
			fi
			echo "secretenv.kek_previous_version = $prev"
			echo "secretenv.kek_passphrase = '$(passphrase_of "$cur")'"
			echo "secretenv.kek_version = $cur"
		} >"$dir/secretenv_keys.conf"
	fi
	chown "$pg_user" "$dir/secretenv_keys.conf"
	chmod 600 "$dir/secretenv_keys.conf"
}

# start_cluster NAME PRELOAD(0|1) VAR [CONF]: initdb, configure and start a
# cluster in $work/NAME; its port goes into variable VAR.  CONF: more lines
# for postgresql.conf, after (so overriding) the common ones.  (Not run in a
# command substitution: the clusters array must reach the EXIT trap.)
start_cluster() {
	local name=$1 preload=$2 dir="$work/$1" extra=${4:-} port
	port=$(free_port)
	as_pg "$pgbin/initdb" -D "$dir" --encoding=UTF8 --no-locale -U postgres \
		--auth=trust -N >"$work/$name.initdb.log" 2>&1 ||
		{ cat "$work/$name.initdb.log" >&2; exit 1; }
	{
		echo "port = $port"
		echo "listen_addresses = ''"
		echo "unix_socket_directories = '$work'"
		if [ "$preload" = 1 ]; then
			echo "shared_preload_libraries = 'secretenv'"
		else
			echo "shared_preload_libraries = ''"
		fi
		echo "include 'secretenv_keys.conf'"
		echo "shared_buffers = 1GB"
		echo "work_mem = 64MB"
		echo "maintenance_work_mem = 512MB"
		echo "max_parallel_workers_per_gather = 0"
		echo "jit = off"
		echo "fsync = off"
		echo "max_wal_size = 8GB"
		echo "checkpoint_timeout = 1h"
		echo "autovacuum = off"
		echo "max_connections = 50"
		[ -z "$extra" ] || echo "$extra"
	} >>"$dir/postgresql.conf"
	write_keys "$dir" 1
	clusters+=("$dir")
	as_pg "$pgbin/pg_ctl" -D "$dir" -l "$work/$name.log" -w start >/dev/null ||
		{ cat "$work/$name.log" >&2; exit 1; }
	as_pg "$pgbin/psql" -X -q -h "$work" -p "$port" -d postgres \
		-c "CREATE DATABASE bench" >/dev/null
	printf -v "$3" '%s' "$port"
}

# sql PORT [psql args...]: run SQL from stdin or -c in database bench,
# unaligned, tuples only, stopping at the first error.  stderr is shown
# only on failure (the no-preload cluster WARNs whenever it loads secretenv).
sql() {
	local port=$1 err
	shift
	err=$(mktemp "$work/psql.XXXXXX")
	as_pg "$pgbin/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$work" -p "$port" -d bench "$@" \
		2>"$err" || { cat "$err" >&2; exit 1; }
	rm -f "$err"
}

# pgbench_tps PORT PGOPTIONS [pgbench args...]: prints the reported tps.
# (The no-preload cluster WARNs on every connection: filtered from errors.)
pgbench_tps() {
	local port=$1 opts=$2 result tps
	shift 2
	result=$(as_pg env PGOPTIONS="$opts" "$pgbin/pgbench" -n -h "$work" -p "$port" "$@" bench \
		2>"$work/pgbench.stderr") ||
		{ grep -v '^\(WARNING\|DETAIL\|HINT\):' "$work/pgbench.stderr" | tail -n 20 >&2; exit 1; }
	tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$result")
	if [ -z "$tps" ] || awk -v t="$tps" 'BEGIN { exit !(t <= 0) }'; then
		echo "bench: pgbench completed no transaction: $*" >&2
		exit 1
	fi
	echo "$tps"
}

# record SECTION NAME RUN VALUE: store an externally measured per-unit value.
record() {
	sql "$main" -c "INSERT INTO bench.results VALUES ('$1', '$2', $3, 1, $4)"
}

# rotated RUN WORD...: WORDs rotated left by RUN, so that each run times the
# variants in a different order and none is always first after a VACUUM.
rotated() {
	local run=$1
	shift
	local -a w=("$@")
	local i n=${#w[@]}
	for ((i = 0; i < n; i++)); do
		echo "${w[(i + run) % n]}"
	done
}

log "starting clusters (rows=$rows rotate_rows=$rotate_rows runs=$runs secs=$secs)"
main='' nopre=''				# ports, set by start_cluster
start_cluster main 1 main
if wants connect; then
	start_cluster nopreload 0 nopre
fi

# --------------------------------------------------------------------------
# Schema, helpers and data.
# --------------------------------------------------------------------------
# pgcrypto's key is 32 bytes (AES-256, as secretenv's keys) with a fixed IV:
# the cheapest thing a pgcrypto user could do, and not secure (unauthenticated
# CBC, IV reuse); it is the floor of "encryption in SQL", not a recommendation.
aes_key=$(openssl rand -hex 32)
aes_iv=$(openssl rand -hex 16)
pgp_pass=$(openssl rand -hex 16)

sql "$main" <<SQL
CREATE EXTENSION secretenv;
CREATE EXTENSION pgcrypto;
CREATE SCHEMA bench;

-- One row per timed statement or pgbench run; value / units is the figure.
CREATE TABLE bench.results (
	section text NOT NULL,
	name text NOT NULL,
	run int NOT NULL,
	units bigint NOT NULL,
	value float8 NOT NULL,
	seq bigserial
);

-- Run p_warmup (if any), then time p_query with clock_timestamp() around
-- EXECUTE and record the total in microseconds.  Returns µs per unit.
CREATE FUNCTION bench.measure(p_section text, p_name text, p_run int,
							  p_units bigint, p_query text, p_warmup text)
RETURNS float8 LANGUAGE plpgsql AS \$\$
DECLARE
	t0 timestamptz;
	elapsed float8;
BEGIN
	IF p_warmup IS NOT NULL THEN
		EXECUTE p_warmup;
	END IF;
	t0 := clock_timestamp();
	EXECUTE p_query;
	elapsed := extract(epoch FROM clock_timestamp() - t0) * 1e6;
	INSERT INTO bench.results VALUES (p_section, p_name, p_run, p_units, elapsed);
	RETURN elapsed / p_units;
END
\$\$;

-- N secrets of 51 bytes, each as a secretenv envelope, as pgcrypto AES-CBC
-- and as pgcrypto OpenPGP (100 when the decrypt row does not run: only
-- bench.t_warm is used then).  OFFSET 0 keeps secret_encrypt to one call per
-- row.
CREATE TABLE bench.t AS
SELECT id, name, v, convert_to(v, 'UTF8') AS vb,
	   (e).encrypted_value AS ev, (e).wrapped_dek AS wd, (e).kek_version AS kv,
	   encrypt_iv(convert_to(v, 'UTF8'), '\\x$aes_key', '\\x$aes_iv', 'aes') AS cbc,
	   pgp_sym_encrypt(v, '$pgp_pass') AS pgp
FROM (SELECT id, name, v, secretenv.secret_encrypt(v, id, name) AS e
	  FROM (SELECT gen_random_uuid() AS id, 'bench/secret-' || i AS name,
				   'sk-live-' || left(md5(i::text) || md5((-i)::text), 43) AS v
			FROM generate_series(1, $(if wants decrypt; then echo "$rows"; else echo 100; fi)) AS i) s
	  OFFSET 0) x;
CREATE TABLE bench.t_warm AS SELECT * FROM bench.t LIMIT 100;
VACUUM (FREEZE, ANALYZE) bench.t, bench.t_warm;

-- The store secret_get and the connection test read.
SELECT count(secretenv.secret_create('get-' || i,
		'sk-live-' || left(md5(i::text) || md5((-i)::text), 43)))
FROM generate_series(1, $get_secrets) AS i;
VACUUM (FREEZE, ANALYZE) secretenv.secrets;
SQL

if wants connect; then
	sql "$nopre" <<SQL
CREATE EXTENSION secretenv;
SELECT count(secretenv.secret_create('get-' || i,
		'sk-live-' || left(md5(i::text) || md5((-i)::text), 43)))
FROM generate_series(1, $get_secrets) AS i;
VACUUM (FREEZE, ANALYZE) secretenv.secrets;
SQL
fi

# time_scan SECTION NAME RUN EXPR: time SELECT sum(EXPR) over bench.t, after
# the same statement over bench.t_warm.
time_scan() {
	local q="SELECT sum($4) FROM %s"
	sql "$main" -c "SELECT bench.measure('$1', '$2', $3, $rows,
		format(\$q\$$q\$q\$, 'bench.t'), format(\$q\$$q\$q\$, 'bench.t_warm'))" >/dev/null
}

key="'\\x$aes_key'::bytea, '\\x$aes_iv'::bytea"
declare -A expr=(
	[scan]="octet_length(ev)"
	[secret_decrypt]="octet_length(secretenv.secret_decrypt(ev, wd, kv, id, name))"
	[decrypt_iv]="octet_length(decrypt_iv(cbc, $key, 'aes'))"
	[pgp_sym_decrypt]="octet_length(pgp_sym_decrypt(pgp, '$pgp_pass'))"
	[secret_encrypt]="octet_length((secretenv.secret_encrypt(v, id, name)).encrypted_value)"
	[encrypt_iv]="octet_length(encrypt_iv(vb, $key, 'aes'))"
	[pgp_sym_encrypt]="octet_length(pgp_sym_encrypt(v, '$pgp_pass'))"
)

# --------------------------------------------------------------------------
# 1. Decrypt and encrypt over N rows.
# --------------------------------------------------------------------------
if wants decrypt; then
	for ((run = 1; run <= runs; run++)); do
		log "decrypt/encrypt run $run/$runs"
		for name in $(rotated "$run" scan secret_decrypt decrypt_iv pgp_sym_decrypt); do
			time_scan decrypt "$name" "$run" "${expr[$name]}"
		done
		for name in $(rotated "$run" secret_encrypt encrypt_iv pgp_sym_encrypt); do
			time_scan encrypt "$name" "$run" "${expr[$name]}"
		done
	done
fi

# --------------------------------------------------------------------------
# 1b. secret_decrypt over BENCH_PAR_ROWS rows with two parallel workers (and
#     the leader) vs none.  The workers use the KEKs they inherited from the
#     postmaster: no passphrase command, no PBKDF2 in them.
# --------------------------------------------------------------------------
if wants parallel; then
	log "loading $par_rows rows for the parallel decrypt"
	sql "$main" <<SQL
CREATE TABLE bench.tp AS
SELECT id, name, (e).encrypted_value AS ev, (e).wrapped_dek AS wd, (e).kek_version AS kv
FROM (SELECT id, name, secretenv.secret_encrypt(v, id, name) AS e
	  FROM (SELECT gen_random_uuid() AS id, 'bench/par-' || i AS name,
				   'sk-live-' || left(md5(i::text) || md5((-i)::text), 43) AS v
			FROM generate_series(1, $par_rows) AS i) s
	  OFFSET 0) x;
ALTER TABLE bench.tp SET (parallel_workers = 2);
VACUUM (FREEZE, ANALYZE) bench.tp;
SQL
	par_on="SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0; SET max_parallel_workers_per_gather = 2"
	par_off="SET max_parallel_workers_per_gather = 0"
	par_query="SELECT sum(octet_length(secretenv.secret_decrypt(ev, wd, kv, id, name))) FROM bench.tp"
	par_warm="SELECT sum(octet_length(secretenv.secret_decrypt(ev, wd, kv, id, name))) FROM (SELECT * FROM bench.tp LIMIT 100) s"
	# The figure means nothing unless the plan really ran two workers.
	launched=$(sql "$main" -c "$par_on" -c "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) $par_query" |
		sed -n 's/.*Workers Launched: \([0-9]*\).*/\1/p')
	if [ "$launched" != 2 ]; then
		echo "bench: the parallel decrypt launched ${launched:-no} workers, not 2" >&2
		exit 1
	fi
	for ((run = 1; run <= runs; run++)); do
		log "parallel decrypt run $run/$runs"
		for v in $(rotated "$run" serial parallel); do
			if [ "$v" = parallel ]; then set=$par_on; else set=$par_off; fi
			sql "$main" -c "$set" -c "SELECT bench.measure('parallel', '$v', $run, $par_rows, \$q\$$par_query\$q\$, \$q\$$par_warm\$q\$)" >/dev/null
		done
	done
fi

# --------------------------------------------------------------------------
# 2. New connection + first decrypt vs new connection + SELECT 1, with and
#    without preload.  The decrypt reads one stored envelope given as
#    literals, so the only table work is secretenv's own (its once-per-backend
#    key health check); without preload the backend also loads the library
#    and runs PBKDF2 for the KEK.
# --------------------------------------------------------------------------
# shellcheck disable=SC2016 # $f$ is SQL dollar quoting
envelope_sql='SELECT format($f$SELECT octet_length(secretenv.secret_decrypt(%L::bytea, %L::bytea, %s, %L::uuid, %L));$f$,
	encrypted_value, wrapped_dek, kek_version, secret_id, secret_name)
FROM secretenv.secrets WHERE secret_name = '"'get-1'"
echo 'SELECT 1;' >"$work/select1.sql"
sql "$main" -c "$envelope_sql" >"$work/decrypt_main.sql"
if wants connect; then
	sql "$nopre" -c "$envelope_sql" >"$work/decrypt_nopreload.sql"
fi
chown "$pg_user" "$work"/*.sql

# apply_conf PORT "SETTING=VALUE ...": set secretenv.SETTINGs (SIGHUP ones,
# which PGOPTIONS cannot carry) with ALTER SYSTEM, reload, and wait until a
# new backend sees them.  Remembers what it applied, so a slice whose
# settings are already in force costs nothing.
declare -A applied_conf=()
apply_conf() {
	local port=$1 conf=$2 kv want='' i
	[ "${applied_conf[$port]:-}" = "$conf" ] && return
	for kv in $conf; do
		sql "$port" -c "ALTER SYSTEM SET secretenv.${kv%%=*} = '${kv#*=}'" >/dev/null
		want+="${kv#*=}/"
	done
	sql "$port" -c "SELECT pg_reload_conf()" >/dev/null
	for ((i = 0; i < 600; i++)); do
		local have=''
		for kv in $conf; do
			have+="$(sql "$port" -c "SHOW secretenv.${kv%%=*}")/"
		done
		if [ "$have" = "$want" ]; then
			applied_conf[$port]=$conf
			return
		fi
		sleep 0.1
	done
	echo "bench: the settings $conf did not reach new backends" >&2
	exit 1
}

# alternate KIND SECTION RUN NAME=PORT:SCRIPT[:PGOPTIONS[:SETTINGS]]...: pgbench
# figures for each NAME, the variants taking turns in short slices so that
# a burst of other load on the machine hits all of them alike.  The run's
# figure for a variant is its mean over its slices (BENCH_SECS seconds in
# all per variant).
#   KIND connect: ms per connection that runs SCRIPT once (-C, one client,
#                 one-second slices);
#   KIND tps:     transactions per second (-M prepared, one client per CPU,
#                 two-second slices: each slice's new backends start with an
#                 empty secret_get cache, and its 1000 misses must stay small
#                 next to the slice's hits).
# SETTINGS ("audit=reads audit_strict=on") are applied by apply_conf before
# the variant's slice.
alternate() {
	local kind=$1 section=$2 run=$3 spec name port rest script opts fig s conf
	local slice nslices
	shift 3
	local -a names=() args=()
	local -A target=() sum=()
	if [ "$kind" = connect ]; then
		slice=1
		args=(-C -c 1 -j 1)
	else
		slice=2
		args=(-M prepared -c "$(nproc)" -j "$(nproc)")
	fi
	nslices=$((secs / slice > 0 ? secs / slice : 1))
	for spec in "$@"; do
		name=${spec%%=*}
		names+=("$name")
		target[$name]=${spec#*=}
		sum[$name]=0
	done
	for ((s = 0; s < nslices; s++)); do
		for name in $(rotated $((run + s)) "${names[@]}"); do
			port=${target[$name]%%:*}
			rest=${target[$name]#*:}
			script=${rest%%:*}
			opts=
			[ "$script" = "$rest" ] || opts=${rest#*:}
			conf=
			if [ "$opts" != "${opts#*:}" ]; then
				conf=${opts#*:}
				opts=${opts%%:*}
			fi
			[ -z "$conf" ] || apply_conf "$port" "$conf"
			fig=$(pgbench_tps "$port" "$opts" "${args[@]}" -T "$slice" -f "$script")
			if [ "$kind" = connect ]; then
				fig=$(awk -v t="$fig" 'BEGIN { printf "%.6f", 1000 / t }')
			fi
			sum[$name]=$(awk -v a="${sum[$name]}" -v f="$fig" 'BEGIN { printf "%.6f", a + f }')
		done
	done
	for name in "${names[@]}"; do
		record "$section" "$name" "$run" \
			"$(awk -v a="${sum[$name]}" -v n="$nslices" 'BEGIN { printf "%.6f", a / n }')"
	done
}

# alternate_runs KIND SECTION WHAT NAME=PORT:SCRIPT[:PGOPTIONS]...: alternate
# once per run, logging WHAT.
alternate_runs() {
	local kind=$1 section=$2 what=$3 run
	shift 3
	for ((run = 1; run <= runs; run++)); do
		log "$what run $run/$runs"
		alternate "$kind" "$section" "$run" "$@"
	done
}

if wants connect; then
	alternate_runs connect connect connection \
		pre_select1="$main:$work/select1.sql" \
		pre_decrypt="$main:$work/decrypt_main.sql" \
		nopre_select1="$nopre:$work/select1.sql" \
		nopre_decrypt="$nopre:$work/decrypt_nopreload.sql"
fi

# --------------------------------------------------------------------------
# 3. secret_get through pgbench: cached (default), uncached
#    (cache_max_entries = 0, a SUSET setting the superuser passes in
#    PGOPTIONS) and the plain indexed SELECT of the ciphertext it replaces.
# --------------------------------------------------------------------------
cat >"$work/get.sql" <<EOF
\\set n random(1, $get_secrets)
SELECT secretenv.secret_get('get-' || :n);
EOF
cat >"$work/plain.sql" <<EOF
\\set n random(1, $get_secrets)
SELECT encrypted_value FROM secretenv.secrets WHERE secret_name = 'get-' || :n;
EOF
chown "$pg_user" "$work/get.sql" "$work/plain.sql"

if wants get; then
	alternate_runs tps get secret_get \
		cached="$main:$work/get.sql" \
		uncached="$main:$work/get.sql:-c secretenv.cache_max_entries=0" \
		plain="$main:$work/plain.sql"
fi

# The access audit's cost on the read path: secret_get with
# secretenv.audit = reads (a record per read, queued for the writer), and
# with audit_strict = on as well (each read waits until its record is
# committed), against audit = off, cached and uncached.  The settings are
# SIGHUP: each slice reloads the cluster when its variant needs others.
audit_line=''
if wants audit; then
	nocache="-c secretenv.cache_max_entries=0"
	alternate_runs tps get_audit "secret_get with the access audit" \
		off_cached="$main:$work/get.sql::audit=off audit_strict=off" \
		reads_cached="$main:$work/get.sql::audit=reads audit_strict=off" \
		strict_cached="$main:$work/get.sql::audit=reads audit_strict=on" \
		off_uncached="$main:$work/get.sql:$nocache:audit=off audit_strict=off" \
		reads_uncached="$main:$work/get.sql:$nocache:audit=reads audit_strict=off" \
		strict_uncached="$main:$work/get.sql:$nocache:audit=reads audit_strict=on"
	apply_conf "$main" "audit=reads audit_strict=off"
	records=$(sql "$main" -c "SELECT count(*) FROM secretenv.audit_log WHERE operation = 'read'")
	[ "$records" -gt 0 ] || { echo "bench: the audited reads left no record" >&2; exit 1; }
	# A non-strict record the writer cannot keep up with is dropped (counted):
	# a ratio bought with drops would flatter the audit, so they are reported.
	audit_line="Access audit during its rows (and the rows before, which run with the default audit = reads): $(sql "$main" -c "SELECT format('%s records written, %s dropped, %s strict failures',
	s->>'written', s->>'dropped', s->>'strict_failures') FROM secretenv.audit_stats() s")"

	# What bounds the non-strict rows: the writer's CPU per record, read
	# from /proc over one run of cached reads (one writer lives through it).
	writer_pid() {
		sql "$main" -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'secretenv audit writer' AND datname = 'bench'"
	}
	written() { sql "$main" -c "SELECT secretenv.audit_stats()->>'written'"; }
	cpu_ticks() {
		if [ -n "$1" ] && [ -r "/proc/$1/stat" ]; then awk '{ print $14 + $15 }' "/proc/$1/stat"; else echo 0; fi
	}
	as_pg "$pgbin/pgbench" -n -M prepared -c "$(nproc)" -j "$(nproc)" -T $((secs + 2)) \
		-h "$work" -p "$main" -f "$work/get.sql" bench >/dev/null 2>&1 &
	load=$!
	sleep 1
	pid0=$(writer_pid) w0=$(written) t0=$(cpu_ticks "$pid0")
	sleep "$secs"
	pid1=$(writer_pid) w1=$(written) t1=$(cpu_ticks "$pid1")
	wait "$load"
	if [ -n "$pid0" ] && [ "$pid0" = "$pid1" ] && [ "$w1" -gt "$w0" ]; then
		audit_line+=$'\n'"Audit writer CPU per record (cached reads, audit = reads, $(nproc) clients, ${secs} s): $(awk -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v n=$((w1 - w0)) 'BEGIN { printf "%.2f µs over %d records", t * 1e6 / hz / n, n }')"
	else
		audit_line+=$'\n'"Audit writer CPU per record: not measured (the writer restarted during the run)"
	fi
	log "$audit_line"
fi

# The same with row-level security on, for a role the policy applies to
# (the superuser bypasses it): its clients start as that role through
# PGOPTIONS' role setting.  Both sides evaluate the same policy on a read
# from the table; a cache hit is keyed by that role.
if wants rls; then
	sql "$main" <<'SQL'
CREATE ROLE bench_rls IN ROLE secretenv_reader;
CREATE POLICY bench_rls_policy ON secretenv.secrets FOR SELECT TO bench_rls
	USING (secret_name LIKE 'get-%');
ALTER TABLE secretenv.secrets ENABLE ROW LEVEL SECURITY;
SQL
	alternate_runs tps get_rls "secret_get with row-level security" \
		rls_cached="$main:$work/get.sql:-c role=bench_rls" \
		rls_uncached="$main:$work/get.sql:-c role=bench_rls -c secretenv.cache_max_entries=0" \
		rls_plain="$main:$work/plain.sql:-c role=bench_rls"
	sql "$main" <<'SQL'
DROP POLICY bench_rls_policy ON secretenv.secrets;
SQL
fi

# Access rules (issue 27) against an equivalent hand-written policy, both
# under the row-level security secretenv 1.2 enables, each read by an
# application role that is neither superuser nor the table's owner, so
# that row-level security applies to both: bench_rules has the rule
# 'get-%' (read); bench_hand has no rule and a hand-written policy with the
# same condition, restrictive so that secretenv_default stays open for both
# (the same permissive side; a permissive one would close it for every
# role, bench_rules included).  bench_hand also evaluates the rules'
# policy, which lets a role without rules see every row.  Before timing,
# each role must see exactly the get-% secrets of a store that also holds
# one other secret: the figures mean nothing unless both filters work.
if wants rules; then
	sql "$main" >/dev/null <<'SQL'
CREATE ROLE bench_rules IN ROLE secretenv_reader;
CREATE ROLE bench_hand IN ROLE secretenv_reader;
SELECT secretenv.grant_secrets('bench_rules', 'get-%', 'read');
CREATE POLICY bench_hand_policy ON secretenv.secrets AS RESTRICTIVE FOR SELECT TO bench_hand
	USING (secret_name LIKE 'get-%');
SELECT secretenv.secret_create('other-1', 'sk-live-not-for-the-bench-roles-0123456789abcdef') IS NOT NULL;
SQL
	for role in bench_rules bench_hand; do
		seen=$(sql "$main" -c "SET ROLE $role" \
			-c "SELECT count(*) FILTER (WHERE secret_name LIKE 'get-%') || '/' || count(*) FROM secretenv.secrets")
		if [ "$seen" != "$get_secrets/$get_secrets" ]; then
			echo "bench: $role sees $seen (get-% / all) secrets, not $get_secrets/$get_secrets" >&2
			exit 1
		fi
	done
	alternate_runs tps get_rules "secret_get under access rules" \
		rules_cached="$main:$work/get.sql:-c role=bench_rules" \
		rules_uncached="$main:$work/get.sql:-c role=bench_rules -c secretenv.cache_max_entries=0" \
		hand_cached="$main:$work/get.sql:-c role=bench_hand" \
		hand_uncached="$main:$work/get.sql:-c role=bench_hand -c secretenv.cache_max_entries=0"
	sql "$main" >/dev/null <<'SQL'
DROP POLICY bench_hand_policy ON secretenv.secrets;
SELECT secretenv.revoke_secrets('bench_rules', 'get-%', 'read');
DELETE FROM secretenv.secrets WHERE secret_name = 'other-1';
SQL
fi

# --------------------------------------------------------------------------
# 3c. Secret versions (issue 25).
#   - secret_get of the current value: $get_secrets secrets that each have
#     10 kept versions in secretenv.secret_versions ("hist-") against the
#     $get_secrets that have none ("get-"), same table, same pgbench method;
#     the current value is read from secretenv.secrets either way.
#   - secret_update keeping history (secretenv.max_versions = 10: each
#     update moves the old value into secretenv.secret_versions and
#     destroys the oldest) of $upd_secrets secrets in the steady state of 10
#     kept versions ("upd-"), against the 1.1-style overwrite
#     (max_versions = 0) of $upd_secrets secrets that have no kept version
#     ("ovr-"); each timed statement updates every secret of its set once.
#     max_versions is a SIGHUP setting: ALTER SYSTEM and a reload before
#     each variant.
# --------------------------------------------------------------------------
if wants versions; then
upd_secrets=$((rows / 10 < 5000 ? rows / 10 : 5000))
log "loading $get_secrets secrets with 10 kept versions each"
sql "$main" <<SQL
SELECT count(secretenv.secret_create('hist-' || i,
		'sk-live-' || left(md5(i::text) || md5((-i)::text), 43)))
FROM generate_series(1, $get_secrets) AS i;
SELECT count(*) FROM (SELECT secretenv.secret_update('hist-' || i,
		'sk-live-' || left(md5(r::text) || md5((-i)::text), 43))
	FROM generate_series(1, 10) AS r, generate_series(1, $get_secrets) AS i) u;
SELECT count(secretenv.secret_create('upd-' || i, 'sk-live-initial-value-0123456789'))
FROM generate_series(1, $upd_secrets) AS i;
SELECT count(*) FROM (SELECT secretenv.secret_update('upd-' || i, 'sk-live-history-' || r)
	FROM generate_series(1, 10) AS r, generate_series(1, $upd_secrets) AS i) u;
SELECT count(secretenv.secret_create('ovr-' || i, 'sk-live-initial-value-0123456789'))
FROM generate_series(1, $upd_secrets) AS i;
VACUUM (FREEZE, ANALYZE) secretenv.secrets, secretenv.secret_versions;
SQL
[ "$(sql "$main" -c "SELECT count(*) FROM secretenv.secret_versions WHERE secret_name LIKE 'hist-%'")" = $((get_secrets * 10)) ] ||
	{ echo "bench: the hist- secrets do not have 10 kept versions each" >&2; exit 1; }
cat >"$work/hist.sql" <<EOF
\\set n random(1, $get_secrets)
SELECT secretenv.secret_get('hist-' || :n);
EOF
chown "$pg_user" "$work/hist.sql"
alternate_runs tps get_history "secret_get with kept versions" \
	with_history="$main:$work/hist.sql" \
	no_history="$main:$work/get.sql"

# set_max_versions N: reload secretenv.max_versions = N, wait until new backends see it.
set_max_versions() {
	local i
	sql "$main" -c "ALTER SYSTEM SET secretenv.max_versions = $1" -c "SELECT pg_reload_conf()" >/dev/null
	for ((i = 0; i < 600; i++)); do
		[ "$(sql "$main" -c "SELECT secretenv.max_versions()")" = "$1" ] && return
		sleep 0.1
	done
	echo "bench: secretenv.max_versions = $1 did not reach new backends" >&2
	exit 1
}
# upd_query PREFIX: update every secret of a set once.
upd_query() { echo "SELECT count(*) FROM (SELECT secretenv.secret_update('$1' || i, 'sk-live-updated-' || i) FROM generate_series(1, $upd_secrets) AS i) u"; }
upd_warm="SELECT count(*) FROM (SELECT secretenv.secret_update('warm-' || i, 'sk-live-warm-' || i) FROM generate_series(1, 100) AS i) u"
sql "$main" -c "SELECT count(secretenv.secret_create('warm-' || i, 'sk-live-warm')) FROM generate_series(1, 100) AS i" >/dev/null
for ((run = 1; run <= runs; run++)); do
	log "secret_update run $run/$runs"
	for v in $(rotated "$run" history overwrite); do
		if [ "$v" = history ]; then set_max_versions 10; prefix=upd-; else set_max_versions 0; prefix=ovr-; fi
		sql "$main" -c "VACUUM secretenv.secrets, secretenv.secret_versions" -c "CHECKPOINT"
		sql "$main" -c "SELECT bench.measure('update', '$v', $run, $upd_secrets, \$q\$$(upd_query "$prefix")\$q\$, \$q\$$upd_warm\$q\$)" >/dev/null
	done
done
sql "$main" -c "ALTER SYSTEM RESET secretenv.max_versions" -c "SELECT pg_reload_conf()" >/dev/null
fi

# --------------------------------------------------------------------------
# 4. secret_rotate_all() over BENCH_ROTATE_ROWS rows vs the same UPDATE
#    without crypto.
#
# Repeating a rotation needs rows on a KEK other than the current one.
# Rather than rebuild the table from a saved copy (an INSERT of every row
# plus two index builds per run, which would dwarf the measurement), each
# run swaps the two KEKs: run 1 makes version 2 current and rotates 1 -> 2,
# run 2 makes version 1 current and rotates 2 -> 1, and so on.  Whatever
# KEK derivation a swap costs happens in the postmaster at reload, before
# anything is timed.  The rows are made with one INSERT ... SELECT of
# secret_encrypt (secret_create row by row would take minutes); masked_value
# stays NULL, as it plays no part in a rotation.
#
# Fairness: both statements update the same rows and the same two columns,
# through the same BEFORE UPDATE row trigger and AFTER statement trigger,
# from the same table state: each is preceded by VACUUM and CHECKPOINT, so
# it starts from a table whose live rows fill one half and whose other half
# is free (after a first, untimed UPDATE that brings the fresh table to that
# steady state).  Their order alternates from run to run.
# --------------------------------------------------------------------------
if wants rotate; then
	log "loading $rotate_rows secrets for rotation"
	sql "$main" <<SQL
TRUNCATE secretenv.secrets CASCADE;
INSERT INTO secretenv.secrets (secret_id, secret_name, encrypted_value, wrapped_dek, kek_version)
SELECT id, name, (e).encrypted_value, (e).wrapped_dek, (e).kek_version
FROM (SELECT id, name, secretenv.secret_encrypt(v, id, name) AS e
	  FROM (SELECT gen_random_uuid() AS id, 'rotate/secret-' || i AS name,
				   'sk-live-' || left(md5(i::text) || md5((-i)::text), 43) AS v
			FROM generate_series(1, $rotate_rows) AS i) s
	  OFFSET 0) x;
VACUUM (FREEZE, ANALYZE) secretenv.secrets;
UPDATE secretenv.secrets SET wrapped_dek = wrapped_dek || ''::bytea, kek_version = kek_version;
VACUUM secretenv.secrets;
SQL

	# Reload after write_keys and wait until a new backend sees the versions.
	reload_keys() {
		local cur=$1 prev=$2 i
		write_keys "$work/main" "$cur" "$prev"
		sql "$main" -c "SELECT pg_reload_conf()" >/dev/null
		for ((i = 0; i < 600; i++)); do
			[ "$(sql "$main" -c "SELECT secretenv.current_kek_version() || '/' || current_setting('secretenv.kek_previous_version')")" = "$cur/$prev" ] && return
			sleep 0.1
		done
		echo "bench: the key configuration did not reach new backends" >&2
		exit 1
	}

	# Warm-up of both sides: one decrypt, so the backend's key health check
	# (which samples secretenv.secrets) runs before the timed statement.
	warm_decrypt='SELECT octet_length(secretenv.secret_decrypt(encrypted_value, wrapped_dek, kek_version, secret_id, secret_name)) FROM secretenv.secrets LIMIT 1'

	# The batched CALL secretenv.secret_rotate(10000) commits after each batch,
	# which bench.measure's EXECUTE cannot do (a function is atomic): it is timed
	# around psql, connection included (a few ms next to tens of seconds), and
	# its final NOTICE gives the longest batch, i.e. the longest transaction it
	# held open.  Each rotating variant first swaps the two KEKs, so both rotate
	# every row.
	cur=1 prev=0
	for ((run = 1; run <= runs; run++)); do
		log "rotation run $run/$runs"
		for v in $(rotated "$run" update rotate batched); do
			if [ "$v" != update ]; then
				if [ "$cur" = 1 ]; then cur=2 prev=1; else cur=1 prev=2; fi
				reload_keys "$cur" "$prev"
			fi
			sql "$main" -c "VACUUM secretenv.secrets" -c "CHECKPOINT"
			case $v in
				# kek_version <> 0 holds for every row (CHECK kek_version >= 1):
				# the same per-row filter as the rotation's, passing the same rows.
				update) q="UPDATE secretenv.secrets SET wrapped_dek = wrapped_dek || ''::bytea, kek_version = kek_version WHERE kek_version <> 0" ;;
				rotate) q="SELECT secretenv.secret_rotate_all()" ;;
				batched) q='' ;;
			esac
			if [ "$v" = batched ]; then
				sql "$main" -c "$warm_decrypt" >/dev/null
				t0=$(date +%s%N)
				# Not through sql(), which keeps stderr only on failure: the NOTICEs are needed.
				notices=$(as_pg "$pgbin/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$work" -p "$main" -d bench \
					-c "CALL secretenv.secret_rotate(10000)" 2>&1 >/dev/null) ||
					{ echo "bench: secret_rotate failed: $notices" >&2; exit 1; }
				t1=$(date +%s%N)
				record rotate batched "$run" "$(awk -v a="$t0" -v b="$t1" -v n="$rotate_rows" 'BEGIN { printf "%.6f", (b - a) / 1000 / n }')"
				# One "finished" NOTICE per pass (the secrets, then their kept versions): the longest of all.
				longest=$(sed -n 's/.*longest batch \([0-9]*\):\([0-9]*\):\([0-9.]*\).*/\1 \2 \3/p' <<<"$notices" |
					awk '{ v = ($1 * 3600 + $2 * 60 + $3) * 1000; if (v > m) m = v } END { if (NR) printf "%.6f", m }')
				[ -n "$longest" ] || { echo "bench: secret_rotate reported no longest batch" >&2; exit 1; }
				record rotate_longest batched "$run" "$longest"
			else
				sql "$main" -c "SELECT bench.measure('rotate', '$v', $run, $rotate_rows, \$q\$$q\$q\$, \$q\$$warm_decrypt\$q\$)" >/dev/null
			fi
			if [ "$v" != update ]; then
				# Every row must now be on the current version: the rotation was real.
				left=$(sql "$main" -c "SELECT count(*) FROM secretenv.secrets WHERE kek_version <> $cur")
				[ "$left" = 0 ] || { echo "bench: $left rows were not rotated by $v" >&2; exit 1; }
			fi
		done
	done

	# The same first-decrypt connection test against the big store: a backend's
	# first secretenv call runs the key health check, which samples
	# secretenv.secrets (with preload its result is shared between backends
	# until the keys or the table change), so its cost may grow with the store.
	alternate_runs connect connect "connection (big store)" \
		big_select1="$main:$work/select1.sql" \
		big_decrypt="$main:$work/decrypt_main.sql"
fi

# --------------------------------------------------------------------------
# 6. The first read after a reload that changes the key settings (issue 26),
#    with BENCH_RELOAD_CONNS open connections, against the same read with no
#    reload.
#
# A cluster of its own, preloaded, its keys from a passphrase command (so a
# new version costs the postmaster a command run and PBKDF2 at the reload,
# and it publishes the KEK for the open backends), keeps BENCH_RELOAD_CONNS
# psql sessions open, each reading statements from a FIFO.  Each run has two
# rounds, in an order rotated from run to run:
#   noreload: a new connection creates one fresh secret per session under
#             the current KEK, then each session in turn reads its own
#             secret (a cache miss): the read with no reload;
#   reload:   the key configuration changes (run r makes version r + 1
#             current, a version never derived before, and r previous) and
#             pg_reload_conf(); once a new connection sees the new versions
#             (the postmaster has handled the reload), a new connection
#             creates one fresh secret per session under version r + 1, then
#             each session in turn reads its own secret: the session's first
#             statement after the reload, which applies the reload and needs
#             the KEK of version r + 1.  secret_rotate() then moves every row
#             to r + 1, so the next run's reload retires no KEK in use;
#   samereload: the same as noreload after a pg_reload_conf() that changes
#             nothing (once a new connection shows the new
#             pg_conf_load_time()): what any reload costs the first read
#             (PostgreSQL re-reads the files in each session; the postmaster
#             re-runs the passphrase command, the sessions do not).
# Each read is timed twice: inside the server (bench.timed_get:
# clock_timestamp() around secret_get, as bench.measure times a statement),
# and by the client (bash's EPOCHREALTIME around writing the statement and
# reading its answer: psql, the socket, and the backend's processing of the
# reload before the statement, included).  A round's figure is the worst
# session's read (and the median, shown per run); the ratio is the worst
# read after the reload over the worst read without, within a run.  The
# sessions read one at a time: the figure is what one session's first read
# costs, not 100 reads queueing for 2 cores.  Every read must return its
# secret's value and every session must then be on version r + 1; the
# PBKDF2 runs of the sessions (status()'s kek_derivations_in_this_process)
# are recorded per reload round, not judged.
# --------------------------------------------------------------------------
if wants reload; then
	reload_port=''
	start_cluster reload 1 reload_port "# bench: keys from the passphrase command
max_connections = $((reload_conns + 20))
shared_buffers = 128MB"
	sql "$reload_port" >/dev/null <<'SQL'
CREATE EXTENSION secretenv;
CREATE SCHEMA bench;
-- secret_get of a secret whose value is 'sk-live-' || md5(its name), timed
-- inside the server: "<µs> <whether the value was right>".
CREATE FUNCTION bench.timed_get(p_name text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	t0 timestamptz;
	v text;
	elapsed float8;
BEGIN
	t0 := clock_timestamp();
	v := secretenv.secret_get(p_name);
	elapsed := extract(epoch FROM clock_timestamp() - t0) * 1e6;
	RETURN format('%s %s', round(elapsed::numeric, 1), v IS NOT DISTINCT FROM 'sk-live-' || md5(p_name));
END
$$;
SELECT secretenv.secret_create('reload-warm', 'sk-live-' || md5('reload-warm')) IS NOT NULL;
SQL

	# The sessions: psql i reads $sess_dir/in.i (our fd sess_in[i]) and
	# answers on $sess_dir/out.i (our fd sess_out[i]).
	sess_dir=$work/sessions
	mkdir "$sess_dir"
	declare -a sess_in=() sess_out=() sess_pid=()
	for ((i = 1; i <= reload_conns; i++)); do
		mkfifo "$sess_dir/in.$i" "$sess_dir/out.$i"
		as_pg "$pgbin/psql" -X -q -At -h "$work" -p "$reload_port" -d bench \
			<"$sess_dir/in.$i" >"$sess_dir/out.$i" 2>>"$sess_dir/errors" &
		sess_pid[i]=$!
		exec {fd}>"$sess_dir/in.$i"
		sess_in[i]=$fd
		exec {fd}<"$sess_dir/out.$i"
		sess_out[i]=$fd
	done

	# session_query I SQL: run SQL in session I; its output lines go into
	# the array answer, and the µs from sending to the end of the answer
	# into answer_us.  A \echo after the statement marks the end.
	session_query() {
		local i=$1 line t0
		answer=()
		t0=${EPOCHREALTIME/./}
		printf '%s\n\\echo --bench-end--\n' "$2" >&"${sess_in[i]}"
		while :; do
			IFS= read -r -t 600 line <&"${sess_out[i]}" ||
				{ echo "bench: session $i did not answer: $(tail -n 5 "$sess_dir/errors")" >&2; exit 1; }
			[ "$line" = '--bench-end--' ] && break
			answer+=("$line")
		done
		answer_us=$((${EPOCHREALTIME/./} - t0))
	}

	# Warm-up: plans, the library's per-backend state, the key health check.
	for ((i = 1; i <= reload_conns; i++)); do
		for w in 1 2; do
			session_query "$i" "SELECT bench.timed_get('reload-warm');"
			[ "${answer[0]#* }" = t ] ||
				{ echo "bench: session $i read reload-warm wrong: ${answer[*]}" >&2; exit 1; }
		done
	done

	# median_ms: the median of the µs figures on stdin, in ms.
	median_ms() {
		sort -g | awk '{ v[NR] = $1 }
			END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.6f", m / 1000 }'
	}

	# reload_round RUN ROUND: the fresh secrets, then each session's read,
	# recorded as ROUND_max, ROUND_max_client and ROUND_median (ms).
	reload_round() {
		local run=$1 round=$2 i server=() client=()
		sql "$reload_port" -c "SELECT count(secretenv.secret_create(n, 'sk-live-' || md5(n)))
			FROM (SELECT format('reload-%s-%s-%s', $run, '$round', i) AS n
				  FROM generate_series(1, $reload_conns) AS i) s" >/dev/null
		for ((i = 1; i <= reload_conns; i++)); do
			session_query "$i" "SELECT bench.timed_get('reload-$run-$round-$i');"
			[ "${answer[0]#* }" = t ] ||
				{ echo "bench: session $i read reload-$run-$round-$i wrong: ${answer[*]}" >&2; exit 1; }
			server+=("${answer[0]%% *}")
			client+=("$answer_us")
		done
		# Which session was the worst (the first to read, or any): in the log.
		log "$round: the worst read, $(printf '%s\n' "${server[@]}" | awk '$1 > m { m = $1; w = NR } END { printf "%.3f ms, by session %d (sessions read in order)", m / 1000, w }')"
		record reload "${round}_max" "$run" "$(printf '%s\n' "${server[@]}" | sort -g | tail -n 1 | awk '{ printf "%.6f", $1 / 1000 }')"
		record reload "${round}_max_client" "$run" "$(printf '%s\n' "${client[@]}" | sort -g | tail -n 1 | awk '{ printf "%.6f", $1 / 1000 }')"
		record reload "${round}_median" "$run" "$(printf '%s\n' "${server[@]}" | median_ms)"
		record reload "${round}_median_client" "$run" "$(printf '%s\n' "${client[@]}" | median_ms)"
	}

	# sessions_pbkdf2: PBKDF2 runs of all sessions so far.
	sessions_pbkdf2() {
		local i total=0
		for ((i = 1; i <= reload_conns; i++)); do
			session_query "$i" "SELECT (secretenv.status()->>'kek_derivations_in_this_process')::int;"
			total=$((total + answer[0]))
		done
		echo "$total"
	}

	kek=1
	for ((run = 1; run <= runs; run++)); do
		log "first read after a key reload, run $run/$runs ($reload_conns connections)"
		for round in $(rotated "$run" noreload reload samereload); do
			if [ "$round" = samereload ]; then
				loaded=$(sql "$reload_port" -c "SELECT pg_conf_load_time()")
				sql "$reload_port" -c "SELECT pg_reload_conf()" >/dev/null
				for ((i = 0; ; i++)); do
					[ "$(sql "$reload_port" -c "SELECT pg_conf_load_time()")" != "$loaded" ] && break
					[ "$i" -lt 600 ] || { echo "bench: the reload did not reach new backends" >&2; exit 1; }
					sleep 0.1
				done
			elif [ "$round" = reload ]; then
				before=$(sessions_pbkdf2)
				kek=$((kek + 1))
				write_keys "$work/reload" "$kek" $((kek - 1))
				sql "$reload_port" -c "SELECT pg_reload_conf()" >/dev/null
				for ((i = 0; ; i++)); do
					[ "$(sql "$reload_port" -c "SELECT secretenv.current_kek_version() || '/' || current_setting('secretenv.kek_previous_version')")" = "$kek/$((kek - 1))" ] && break
					[ "$i" -lt 600 ] || { echo "bench: the key reload did not reach new backends" >&2; exit 1; }
					sleep 0.1
				done
			fi
			reload_round "$run" "$round"
			if [ "$round" = reload ]; then
				for ((i = 1; i <= reload_conns; i++)); do
					session_query "$i" "SELECT secretenv.current_kek_version();"
					[ "${answer[0]}" = "$kek" ] ||
						{ echo "bench: session $i is on KEK version ${answer[0]}, not $kek" >&2; exit 1; }
				done
				record reload backend_pbkdf2 "$run" $(($(sessions_pbkdf2) - before))
				sql "$reload_port" -c "CALL secretenv.secret_rotate()"
				left=$(sql "$reload_port" -c "SELECT count(*) FROM secretenv.secrets WHERE kek_version <> $kek")
				[ "$left" = 0 ] || { echo "bench: $left rows were not rotated to version $kek" >&2; exit 1; }
			fi
		done
	done

	for ((i = 1; i <= reload_conns; i++)); do
		printf '\\q\n' >&"${sess_in[i]}"
		fd=${sess_in[i]}
		exec {fd}>&-
		fd=${sess_out[i]}
		exec {fd}<&-
	done
	wait "${sess_pid[@]}" || true
fi

# --------------------------------------------------------------------------
# 5. The hardware bound: OpenSSL's own AES-256-GCM on 64-byte blocks.
# --------------------------------------------------------------------------
log "openssl speed"
gcm_kbps=$(openssl speed -evp aes-256-gcm -seconds 1 -bytes 64 2>/dev/null |
	awk 'tolower($1) == "aes-256-gcm" { v = $NF; sub(/k$/, "", v); print v }')
[ -n "$gcm_kbps" ] || { echo "bench: could not parse openssl speed" >&2; exit 1; }
gcm_bps=$(awk -v k="$gcm_kbps" 'BEGIN { printf "%.0f", k * 1000 }')
gcm_us=$(awk -v b="$gcm_bps" 'BEGIN { printf "%.6f", 64 / b * 1e6 }')
sql "$main" -c "INSERT INTO bench.results VALUES ('openssl', 'gcm64', 1, 1, $gcm_us)"

# --------------------------------------------------------------------------
# Report.
# --------------------------------------------------------------------------
pg_version=$(sql "$main" -c "SHOW server_version")
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
machine="Machine: $(nproc) × ${cpu:-unknown CPU}; PostgreSQL $pg_version; $(openssl version | cut -d' ' -f1-2)"
params="secretenv $commit; N = $rows rows (51-byte values), parallel decrypt over $par_rows rows, rotation over $rotate_rows rows, $get_secrets secrets for secret_get, medians of $runs interleaved runs, pgbench $secs s per variant and run (alternating slices)$(if wants reload; then echo ", $reload_conns open connections for the key reload"; fi)${only:+; rows $only only}"
openssl_line="OpenSSL AES-256-GCM, 64-byte blocks: $gcm_bps bytes/s = $(printf '%.3f' "$gcm_us") µs per 64-byte op"

# One row per reported figure: value and baseline are medians of value/units;
# the ratio is the median of the per-run ratios.  Lower is better except for
# TPS (kind 'tps'), where the ratio is value / baseline and must be >= goal.
report_sql=$(cat <<'SQL'
WITH per AS (
	SELECT section, name, run, value / units AS v FROM bench.results
), spec(ord, label, section, name, base, base_label, kind, goal) AS (
	VALUES
	(1, 'secret_decrypt', 'decrypt', 'secret_decrypt', 'decrypt_iv', 'decrypt_iv (AES-CBC)', 'us', 1.3),
	(2, 'secret_decrypt', 'decrypt', 'secret_decrypt', 'pgp_sym_decrypt', 'pgp_sym_decrypt', 'us', NULL),
	(3, 'secret_decrypt', 'decrypt', 'secret_decrypt', 'scan', 'scan floor: octet_length(ev)', 'us', NULL),
	(4, 'decrypt_iv', 'decrypt', 'decrypt_iv', 'scan', 'scan floor: octet_length(ev)', 'us', NULL),
	(4.5, 'secret_decrypt, 2 parallel workers', 'parallel', 'parallel', 'serial', 'no parallel workers', 'us', 0.6),
	(5, 'secret_encrypt', 'encrypt', 'secret_encrypt', 'encrypt_iv', 'encrypt_iv (AES-CBC)', 'us', 2.0),
	(6, 'secret_encrypt', 'encrypt', 'secret_encrypt', 'pgp_sym_encrypt', 'pgp_sym_encrypt', 'us', NULL),
	(7, 'secret_rotate_all()', 'rotate', 'rotate', 'update', 'UPDATE without crypto', 'us', 1.2),
	(7.5, 'CALL secret_rotate(10000)', 'rotate', 'batched', 'rotate', 'one-shot secret_rotate_all()', 'us', 1.5),
	(7.6, 'secret_rotate(10000), longest batch', 'rotate_longest', 'batched', NULL, '', 'txms', 2000),
	(8, 'connect + first decrypt, preload', 'connect', 'pre_decrypt', 'pre_select1', 'connect + SELECT 1', 'ms', 1.2),
	(9, 'connect + first decrypt, no preload', 'connect', 'nopre_decrypt', 'nopre_select1', 'connect + SELECT 1', 'ms', NULL),
	(10, 'connect + first decrypt, preload, rotation-size store', 'connect', 'big_decrypt', 'big_select1', 'connect + SELECT 1', 'ms', NULL),
	(11, 'secret_get, cached', 'get', 'cached', 'plain', 'indexed SELECT of the ciphertext', 'tps', 1.0),
	(12, 'secret_get, uncached', 'get', 'uncached', 'plain', 'indexed SELECT of the ciphertext', 'tps', 1.0),
	(12.1, 'secret_get, cached, audit = reads', 'get_audit', 'reads_cached', 'off_cached', 'audit = off', 'tps', 0.75),
	(12.2, 'secret_get, uncached, audit = reads', 'get_audit', 'reads_uncached', 'off_uncached', 'audit = off', 'tps', 0.75),
	(12.3, 'secret_get, cached, audit = reads, strict', 'get_audit', 'strict_cached', 'off_cached', 'audit = off', 'tps', 0.75),
	(12.4, 'secret_get, uncached, audit = reads, strict', 'get_audit', 'strict_uncached', 'off_uncached', 'audit = off', 'tps', 0.75),
	(13, 'secret_get, cached, row-level security', 'get_rls', 'rls_cached', 'rls_plain', 'indexed SELECT, same policy', 'tps', 1.0),
	(14, 'secret_get, uncached, row-level security', 'get_rls', 'rls_uncached', 'rls_plain', 'indexed SELECT, same policy', 'tps', NULL),
	(14.5, 'secret_get, cached, access rules', 'get_rules', 'rules_cached', 'hand_cached', 'hand-written policy, same condition', 'tps', 0.95),
	(14.6, 'secret_get, uncached, access rules', 'get_rules', 'rules_uncached', 'hand_uncached', 'hand-written policy, same condition', 'tps', 0.95),
	(14.70, 'secret_get, cached, 10 kept versions', 'get_history', 'with_history', 'no_history', 'same read without kept versions', 'tps', 0.95),
	(14.75, 'secret_update keeping history (max_versions = 10, 10 kept)', 'update', 'history', 'overwrite', '1.1-style overwrite (max_versions = 0, none kept)', 'us', 1.3),
	(14.80, 'first read after a key reload, worst connection', 'reload', 'reload_max', 'noreload_max', 'same read, no reload', 'lat', 2.0),
	(14.81, 'first read after a key reload, median connection', 'reload', 'reload_median', 'noreload_median', 'same read, no reload', 'lat', NULL),
	(14.82, 'first read after a key reload, worst, client round trip', 'reload', 'reload_max_client', 'noreload_max_client', 'same read, no reload', 'lat', NULL),
	(14.83, 'first read after a key reload, median, client round trip', 'reload', 'reload_median_client', 'noreload_median_client', 'same read, no reload', 'lat', NULL),
	(14.84, 'first read after a key reload, median, client round trip', 'reload', 'reload_median_client', 'samereload_median_client', 'after a reload changing nothing', 'lat', NULL),
	(15, 'OpenSSL AES-256-GCM, 64-byte op', 'openssl', 'gcm64', NULL, '', 'op', NULL)
), fig AS (
	SELECT s.*,
		-- The longest transaction over all runs; the median of anything else.
		(SELECT CASE WHEN s.kind = 'txms' THEN max(v)
					 ELSE percentile_cont(0.5) WITHIN GROUP (ORDER BY v) END
		 FROM per p WHERE p.section = s.section AND p.name = s.name) AS val,
		(SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY v) FROM per p
		 WHERE p.section = s.section AND p.name = s.base) AS bval,
		(SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY a.v / b.v)
		 FROM per a JOIN per b USING (section, run)
		 WHERE a.section = s.section AND a.name = s.name AND b.name = s.base) AS ratio
	FROM spec s
)
SELECT label AS measurement,
	   bench.fmt(val, kind) AS "value",
	   CASE WHEN base IS NULL THEN '' ELSE base_label || ': ' || bench.fmt(bval, kind) END AS baseline,
	   CASE WHEN ratio IS NULL THEN '' ELSE to_char(ratio, 'FM999990.00') || '×' END AS ratio,
	   CASE WHEN goal IS NULL THEN ''
			WHEN kind = 'tps' THEN '≥ ' || to_char(goal, 'FM0.09') || '×'
			WHEN kind = 'txms' THEN '≤ ' || to_char(goal, 'FM999990') || ' ms'
			ELSE '≤ ' || to_char(goal, 'FM0.0') || '×' END AS goal,
	   CASE WHEN goal IS NULL THEN ''
			-- The longest transaction is judged on its value, not a ratio.
			WHEN kind = 'txms' THEN CASE WHEN val <= goal THEN 'met' ELSE 'missed' END
			-- Judged on the ratio as printed (two decimals), so the two agree.
			WHEN (kind = 'tps' AND round(ratio::numeric, 2) >= goal)
			  OR (kind <> 'tps' AND round(ratio::numeric, 2) <= goal) THEN 'met'
			ELSE 'missed' END AS result
FROM fig
WHERE val IS NOT NULL			-- a row BENCH_ONLY left out
ORDER BY ord
SQL
)

sql "$main" <<'SQL'
CREATE FUNCTION bench.fmt(x float8, kind text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
	SELECT CASE
		WHEN x IS NULL THEN 'n/a'
		WHEN kind = 'tps' THEN to_char(x, 'FM999999990') || ' TPS'
		WHEN kind = 'ms' THEN to_char(x, 'FM999990.00') || ' ms/conn'
		WHEN kind = 'txms' THEN to_char(x, 'FM999990') || ' ms'
		WHEN kind = 'lat' THEN to_char(x, 'FM999990.000') || ' ms'
		WHEN kind = 'op' THEN to_char(x, 'FM0.000') || ' µs/op'
		WHEN x >= 100 THEN to_char(x, 'FM999999990') || ' µs/row'
		WHEN x >= 10 THEN to_char(x, 'FM990.0') || ' µs/row'
		ELSE to_char(x, 'FM0.000') || ' µs/row' END
$$;
SQL

echo
echo "$machine"
echo "$params"
echo "$openssl_line"
echo "$audit_line"
echo
# psql's aligned format measures UTF-8 widths itself (µ, ×, ≤).
as_pg "$pgbin/psql" -X -q -P footer=off -v ON_ERROR_STOP=1 -h "$work" -p "$main" -d bench \
	-c "$report_sql"

{
	echo "$machine  "
	echo "$params  "
	echo "$openssl_line  "
	echo "${audit_line//$'\n'/$'  \n'}"
	echo
	echo "| measurement | value | baseline | ratio | goal | result |"
	echo "|---|---:|---|---:|---|---|"
	sql "$main" -F ' | ' -c "$report_sql" | sed 's/^/| /; s/$/ |/'
	echo
	echo "Every run (value per row, op, connection or TPS, in run order):"
	echo
	echo "| section | variant | runs |"
	echo "|---|---|---|"
	sql "$main" -F ' | ' -c "
		SELECT section, name,
			   string_agg(to_char(value / units, 'FM999999990.000'), ', ' ORDER BY run)
		FROM bench.results GROUP BY section, name ORDER BY min(seq)" |
		sed 's/^/| /; s/$/ |/'
} >"$out"
log "Markdown table written to $out"
