#!/usr/bin/env bash
# Run secretenv's suites on one PostgreSQL major inside its chroot (made by
# provision.sh): copy the tree in, build it with -Werror against that
# major's PGXS, install it into the chroot's server, then run pg_regress,
# pg_isolation_regress and the TAP files, each on throwaway clusters run by
# the chroot's postgres user; then build the Debian package for the major.
#
# Usage (as root):  test/majors/run_suites.sh MAJOR CHROOT LOGDIR [TAP files...]
#   TAP files: paths like test/t/010_mlflow_vectors.pl; none = every file.
# Environment:      SECRETENV_VECTORS  MLflow vector directory (copied in)
# Prints one "SUITE: N passed, N failed, N skipped" line per suite
# (build, pg_regress, isolation, tap, package), for test/run_all.sh to record.
set -uo pipefail

major=${1:?usage: run_suites.sh MAJOR CHROOT LOGDIR [TAP files]}
root=${2:?chroot directory}
logdir=${3:?log directory}
shift 3
tap_files="$*"
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
. "$here/chroot.sh"
mkdir -p "$logdir"

# The tree (as git would check it out, plus uncommitted files) and the vectors.
rm -rf "$root/secretenv"
mkdir -p "$root/secretenv/src" "$root/secretenv/vectors"
(cd "$top" && tar --exclude=./.git --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
	--exclude=./tmp_check --exclude=./results -cf - .) | tar -C "$root/secretenv/src" -xf -
if [ -n "${SECRETENV_VECTORS:-}" ] && [ -d "$SECRETENV_VECTORS" ]; then
	cp -a "$SECRETENV_VECTORS/." "$root/secretenv/vectors/"
fi
pgc=/usr/lib/postgresql/$major/bin/pg_config
inside() { chroot_run "$root" "$@"; }
# The host's PostgreSQL 15 with secretenv 1.1 beside this major, for the
# pg_upgrade test (test/t/079_pg_upgrade_major.pl).
old_pg=
if [ "$major" -gt 15 ] && bash "$here/old_server.sh" "$root" >"$logdir/old_server.log" 2>&1; then
	old_pg=/usr/lib/postgresql/15
else
	echo "pg$major: no PostgreSQL 15 beside it, the pg_upgrade test skips itself:"
	tail -5 "$logdir/old_server.log"
fi
as_postgres() {
	chroot_run "$root" runuser -u postgres -- env SECRETENV_VECTORS=/secretenv/vectors \
		SECRETENV_OLD_PG="$old_pg" PATH="/usr/lib/postgresql/$major/bin:/usr/local/bin:/usr/bin:/bin" "$@"
}

if inside make -C /secretenv/src -s PG_CONFIG="$pgc" COPT=-Werror >"$logdir/build.log" 2>&1 &&
	inside make -C /secretenv/src -s PG_CONFIG="$pgc" install >>"$logdir/build.log" 2>&1; then
	echo "build: 1 passed, 0 failed, 0 skipped"
else
	tail -40 "$logdir/build.log"
	echo "build: 0 passed, 1 failed, 0 skipped"
	exit 1
fi
inside chown -R postgres: /secretenv

# pg_regress and isolation: one count per test file.
count_regress() {
	local log=$1 name=$2 ok bad
	ok=$(grep -cE '\.\.\. ok |^ok [0-9]+ ' "$log")
	bad=$(grep -cE '\.\.\. FAILED|\.\.\. failed|^not ok [0-9]+ ' "$log")
	if [ "$ok" -eq 0 ] && [ "$bad" -eq 0 ]; then bad=1; fi
	if [ "$bad" -gt 0 ]; then
		tail -40 "$log"
		find "$root/secretenv/src" -name regression.diffs -exec head -150 {} \;
	fi
	echo "$name: $ok passed, $bad failed, 0 skipped"
}
as_postgres make -C /secretenv/src -s PG_CONFIG="$pgc" installcheck REGRESS_TEMP_INSTANCE=1 \
	ISOLATION= TAP_TESTS= >"$logdir/regress.log" 2>&1
count_regress "$logdir/regress.log" pg_regress
as_postgres make -C /secretenv/src -s PG_CONFIG="$pgc" installcheck REGRESS= TAP_TESTS= \
	>"$logdir/isolation.log" 2>&1
count_regress "$logdir/isolation.log" isolation

# TAP: every assertion counts; a file that skips itself counts one skip.
prove_tests=${tap_files:-test/t/*.pl}
as_postgres make -C /secretenv/src -s PG_CONFIG="$pgc" installcheck REGRESS= ISOLATION= \
	PROVE_TESTS="$prove_tests" PROVE_FLAGS=-v >"$logdir/tap.log" 2>&1
tap_rc=$?
log=$logdir/tap.log
skipped_asserts=$(grep -ciE '^ *ok [0-9]+ *(- .*)?# skip' "$log")
ok=$(( $(grep -cE '^ *ok [0-9]+' "$log") - skipped_asserts ))
bad=$(grep -cE '^ *not ok [0-9]+' "$log")
skip=$(( skipped_asserts + $(grep -ciE '^ *1\.\.0 # skip' "$log") ))
# A file that died without a failed assertion ("Failed: 0" in prove's
# summary) counts one failure.
bad=$((bad + $(grep -cE '\(Wstat: [1-9][0-9]* .*Failed: 0\)' "$log")))
if [ "$tap_rc" -ne 0 ] && [ "$bad" -eq 0 ]; then bad=1; fi
if [ "$bad" -gt 0 ]; then
	grep -E '^ *not ok|Failed|Dubious|Wstat' "$log" | head -60
	cp -a "$root/secretenv/src/tmp_check/log" "$logdir/tap-logs" 2>/dev/null
fi
grep -iE '# skip' "$log" | sed "s/^/pg$major skip: /" | head -20
echo "tap: $ok passed, $bad failed, $skip skipped"

# The Debian package for this major, built as docs/installation.md says (pg_buildext;
# its build runs pg_regress against the library just built): one check for
# the .deb, one per pg_regress file of its build.
if ! inside sh -c 'command -v pg_buildext && command -v dpkg-buildpackage' >/dev/null 2>&1; then
	inside env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
		debhelper dpkg-dev fakeroot postgresql-common-dev >"$logdir/package-deps.log" 2>&1
fi
rm -rf "$root/secretenv/deb"
mkdir -p "$root/secretenv/deb/secretenv"
(cd "$top" && tar --exclude=./.git --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
	--exclude=./tmp_check --exclude=./results -cf - .) | tar -C "$root/secretenv/deb/secretenv" -xf -
# The majors build side by side and share the host's network: each one's
# pg_virtualenv cluster gets a port of its own (it would take 5432).
inside sh -c "cd /secretenv/deb/secretenv && export PG_SUPPORTED_VERSIONS=$major PGPORT=$((54000 + major)) &&
	pg_buildext updatecontrol && dpkg-buildpackage -us -uc -b -d" >"$logdir/package.log" 2>&1
deb_ok=0
ls "$root/secretenv/deb/postgresql-$major-secretenv_"*_amd64.deb >/dev/null 2>&1 && deb_ok=1
ok=$(grep -cE '^ok [0-9]+ ' "$logdir/package.log")
bad=$(grep -cE '^not ok [0-9]+ ' "$logdir/package.log")
[ "$deb_ok" -eq 1 ] || { tail -30 "$logdir/package.log"; bad=$((bad + 1)); }
echo "package: $((ok + deb_ok)) passed, $bad failed, 0 skipped"
