#!/usr/bin/env bash
# Run every secretenv test suite from a fresh machine: install the Debian
# packages it needs, build with -Werror, install, then run the crypto unit
# tests (plain and under ASan+UBSan), a short fuzz run, pg_regress,
# pg_isolation_regress and the TAP tests, each on its own throwaway
# cluster run by the postgres user; then check META.json, and build, install,
# test and remove the Debian package.  The last line is "N passed, N failed, N skipped".
#
# Usage (as root):  bash test/run_all.sh
# Environment:      SECRETENV_VECTORS    directory of MLflow vector files
#                                        (default ../shared/vectors/mlflow,
#                                        else test/vectors/mlflow)
#                   SECRETENV_FUZZ_SECONDS  length of the fuzz run (default 30)
#                   SECRETENV_MAJORS     the other PostgreSQL majors to test after 15
#                                        (default "17 18 19"; "" for none)
#
# After the suites on the host's PostgreSQL 15, the other majors are tested
# side by side, each in a chroot of the Debian suite that carries it (test/majors/provision.sh,
# cached under /var/cache/secretenv-majors by exact server version): build,
# pg_regress, isolation and TAP (every file on 18; on 17 and 19 the files of
# test/majors/stage.sh).  Each major's lines and totals are printed on their own.
set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
if [ "$(id -u)" -ne 0 ]; then
	echo "run_all.sh must run as root: it installs packages and the extension," >&2
	echo "then runs its clusters as the postgres user." >&2
	exit 2
fi

bash "$top/test/install_deps.sh" || { echo "0 passed, 1 failed"; exit 1; }

if [ -z "${SECRETENV_VECTORS:-}" ]; then
	for d in "$top/../shared/vectors/mlflow" "$top/test/vectors/mlflow"; do
		if [ -f "$d/secrets.json" ]; then
			SECRETENV_VECTORS=$(cd "$d" && pwd)
			break
		fi
	done
fi
export SECRETENV_VECTORS
echo "MLflow vectors: $SECRETENV_VECTORS"

passed=0
failed=0
skipped=0
# Totals per PostgreSQL major ("pg15", ...): record adds to $major's.
major=pg15
declare -A major_passed major_failed major_skipped
# record SUITE PASSED FAILED [SKIPPED]: a skipped check is neither passed nor failed.
record() {
	passed=$((passed + $2))
	failed=$((failed + $3))
	skipped=$((skipped + ${4:-0}))
	major_passed[$major]=$(( ${major_passed[$major]:-0} + $2 ))
	major_failed[$major]=$(( ${major_failed[$major]:-0} + $3 ))
	major_skipped[$major]=$(( ${major_skipped[$major]:-0} + ${4:-0} ))
	printf '== %-22s %d passed, %d failed, %d skipped\n' "$1" "$2" "$3" "${4:-0}"
}

logdir=$(mktemp -d /tmp/secretenv-logs.XXXXXX)
work=$(mktemp -d /tmp/secretenv-test.XXXXXX)
trap 'rm -rf "$work"' EXIT

# Build and install (as root: the install goes into the system PostgreSQL).
if make -C "$top" -s clean >/dev/null 2>&1 && make -C "$top" -s COPT=-Werror >"$logdir/build.log" 2>&1 &&
	make -C "$top" -s install >>"$logdir/build.log" 2>&1; then
	record build 1 0
else
	cat "$logdir/build.log"
	record build 0 1
	echo "$passed passed, $failed failed"
	exit 1
fi

# Suites that start clusters run from a copy of the tree owned by postgres.
cp -a "$top/." "$work/src"
chown -R postgres: "$work"
chmod 755 "$work"
as_postgres() { runuser -u postgres -- env SECRETENV_VECTORS="$SECRETENV_VECTORS" "$@"; }

# Crypto core: unit tests, then again under AddressSanitizer + UBSan.
make -C "$top/test/unit" -s check VECTORS="$SECRETENV_VECTORS" >"$logdir/unit.log" 2>&1
line=$(grep -E '^unit: [0-9]+ passed, [0-9]+ failed' "$logdir/unit.log" | tail -1)
if [ -n "$line" ]; then
	record unit "$(echo "$line" | awk '{print $2}')" "$(echo "$line" | awk '{print $4}')"
else
	tail -20 "$logdir/unit.log"; record unit 0 1
fi
make -C "$top/test/unit" -s sanitize VECTORS="$SECRETENV_VECTORS" >"$logdir/sanitize.log" 2>&1
line=$(grep -E '^unit: [0-9]+ passed, [0-9]+ failed' "$logdir/sanitize.log" | tail -1)
if [ -n "$line" ] && ! grep -q 'ERROR: AddressSanitizer\|runtime error:' "$logdir/sanitize.log"; then
	record unit-asan-ubsan "$(echo "$line" | awk '{print $2}')" "$(echo "$line" | awk '{print $4}')"
else
	tail -20 "$logdir/sanitize.log"; record unit-asan-ubsan 0 1
fi

# Fuzzing the core's parsers of untrusted bytes (short run; see docs/testing.md for long).
if make -C "$top/test/fuzz" -s run FUZZ_SECONDS="${SECRETENV_FUZZ_SECONDS:-30}" >"$logdir/fuzz.log" 2>&1; then
	grep -E 'Done [0-9]+ runs' "$logdir/fuzz.log" | tail -1
	record fuzz 1 0
else
	tail -30 "$logdir/fuzz.log"; record fuzz 0 1
fi

# pg_regress and pg_isolation_regress, each with its own preloaded cluster.
count_regress() {
	local log=$1 name=$2 ok bad
	ok=$(grep -cE '\.\.\. ok ' "$log")
	bad=$(grep -cE '\.\.\. FAILED|\.\.\. failed' "$log")
	if [ "$ok" -eq 0 ] && [ "$bad" -eq 0 ]; then bad=1; fi
	[ "$bad" -gt 0 ] && { tail -40 "$log"; find "$work/src" -name regression.diffs -exec head -100 {} \; ; }
	record "$name" "$ok" "$bad"
}
as_postgres make -C "$work/src" -s installcheck REGRESS_TEMP_INSTANCE=1 ISOLATION= TAP_TESTS= >"$logdir/regress.log" 2>&1
count_regress "$logdir/regress.log" pg_regress
as_postgres make -C "$work/src" -s installcheck REGRESS= TAP_TESTS= >"$logdir/isolation.log" 2>&1
count_regress "$logdir/isolation.log" pg_isolation_regress

# TAP tests (PostgreSQL::Test::Cluster); every assertion counts.
as_postgres make -C "$work/src" -s installcheck REGRESS= ISOLATION= PROVE_FLAGS=-v >"$logdir/tap.log" 2>&1
tap_rc=$?
ok=$(grep -cE '^ *ok [0-9]+' "$logdir/tap.log")
bad=$(grep -cE '^ *not ok [0-9]+' "$logdir/tap.log")
# "ok N # skip ..." is a skipped assertion; a file that skips itself whole
# ("1..0 # SKIP ...") counts as one skipped check.
skip=$(( $(grep -ciE '^ *ok [0-9]+ *(- .*)?# skip' "$logdir/tap.log") + $(grep -ciE '^ *1\.\.0 # skip' "$logdir/tap.log") ))
ok=$((ok - $(grep -ciE '^ *ok [0-9]+ *(- .*)?# skip' "$logdir/tap.log")))
if [ "$tap_rc" -ne 0 ] && [ "$bad" -eq 0 ]; then bad=1; fi
if [ "$bad" -gt 0 ]; then
	grep -E '^ *not ok|^# |Failed|Dubious' "$logdir/tap.log" | head -60
	for f in "$work"/src/tmp_check/log/regress_log_*; do [ -f "$f" ] && { echo "--- $f"; tail -30 "$f"; }; done
fi
record tap "$ok" "$bad" "$skip"

# run_checker NAME SCRIPT: a checker of the tree printing "NAME: N passed,
# N failed" last; one count per check.
run_checker() {
	local name=$1 script=$2 line
	python3 "$top/test/$script" "$top" >"$logdir/$name.log" 2>&1
	line=$(grep -E "^$name: [0-9]+ passed, [0-9]+ failed" "$logdir/$name.log" | tail -1)
	if [ -n "$line" ]; then
		grep '^not ok' "$logdir/$name.log"
		record "$name" "$(echo "$line" | awk '{print $2}')" "$(echo "$line" | awk '{print $4}')"
	else
		cat "$logdir/$name.log"; record "$name" 0 1
	fi
}

# META.json against PGXN Meta Spec 1.0.0 and the tree.
run_checker meta meta_check.py
# The source layout (docs/layout.md): areas, include and call cycles (from the
# object files of the build above), the core's headers.
run_checker layout layout_check.py

# The Debian package, last: installing it replaces the files `make install`
# put into the system PostgreSQL, and removing it deletes them, so they are
# installed again at the end.  See test/package.sh.
bash "$top/test/package.sh" "$top" "$logdir" >"$logdir/package-summary.log" 2>&1
cat "$logdir/package-summary.log"
line=$(grep -E '^package: [0-9]+ passed, [0-9]+ failed' "$logdir/package-summary.log" | tail -1)
if [ -n "$line" ]; then
	record package "$(echo "$line" | awk '{print $2}')" "$(echo "$line" | awk '{print $4}')"
else
	record package 0 1
fi

# The other PostgreSQL majors, each in its Debian chroot (test/majors/stage.sh).
. "$top/test/majors/stage.sh"
run_major_stages ${SECRETENV_MAJORS-17 18 19}

echo "logs: $logdir"
for m in $(printf '%s\n' "${!major_passed[@]}" | sort -V); do
	echo "$m: ${major_passed[$m]} passed, ${major_failed[$m]} failed, ${major_skipped[$m]} skipped"
done
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
