#!/usr/bin/env bash
# Run the benchmark (test/bench/run.sh) against a PostgreSQL major inside its
# chroot (made by provision.sh).  The tree is copied to /secretenv-bench in
# the chroot (not /secretenv, which run_suites.sh replaces), and secretenv is
# built and installed into a private copy of the chroot's server there, as
# /work/tools/pgroot.sh does for the host's 15: the chroot's own server, which
# run_suites.sh tests, is not touched.
#
# Usage (as root):  test/majors/bench.sh MAJOR CHROOT [OUT]
#   OUT: where the Markdown table goes (/tmp/secretenv-bench-pgMAJOR.md).
# Every BENCH_* variable of the environment is passed to run.sh (BENCH_OUT
# excepted: OUT); BENCH_COMMIT, if not set, names this tree's commit.
set -euo pipefail

major=${1:?usage: bench.sh MAJOR CHROOT [OUT]}
root=${2:?chroot directory}
out=${3:-/tmp/secretenv-bench-pg$major.md}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
. "$here/chroot.sh"
[ -x "$root/usr/lib/postgresql/$major/bin/pg_config" ] ||
	{ echo "bench.sh: $root holds no PostgreSQL $major" >&2; exit 2; }

dir=/secretenv-bench
rm -rf "${root:?}$dir"
mkdir -p "$root$dir/src" "$root$dir/pg/usr/lib/postgresql" "$root$dir/pg/usr/share/postgresql" \
	"$root$dir/pg/usr/include"
(cd "$top" && tar --exclude=./.git --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
	--exclude=./tmp_check --exclude=./results -cf - .) | tar -C "$root$dir/src" -xf -
# The private server: same layout under $dir/pg, so its paths stay relative.
cp -a "$root/usr/lib/postgresql/$major" "$root$dir/pg/usr/lib/postgresql/"
cp -a "$root/usr/share/postgresql/$major" "$root$dir/pg/usr/share/postgresql/"
cp -a "$root/usr/include/postgresql" "$root$dir/pg/usr/include/"
rm -f "$root$dir/pg/usr/lib/postgresql/$major/lib/secretenv.so" \
	"$root$dir/pg/usr/share/postgresql/$major/extension/secretenv"*

if [ -n "${BENCH_COMMIT:-}" ]; then
	commit=$BENCH_COMMIT
else
	commit=$(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo unknown)
	if [ "$commit" != unknown ] && ! git -C "$top" diff --quiet HEAD -- src sql Makefile 2>/dev/null; then
		commit="$commit+changes"
	fi
fi
knobs=()
while IFS= read -r var; do
	[ "$var" = BENCH_OUT ] || [ "$var" = BENCH_COMMIT ] || knobs+=("$var=${!var}")
done < <(compgen -e | grep '^BENCH_' || true)

chroot_run "$root" env "${knobs[@]}" BENCH_COMMIT="$commit" BENCH_OUT="$dir/bench.md" \
	PG_CONFIG="$dir/pg/usr/lib/postgresql/$major/bin/pg_config" bash "$dir/src/test/bench/run.sh"
cp "$root$dir/bench.md" "$out"
echo "bench.sh: the table is in $out" >&2
