#!/usr/bin/env bash
# The Debian package suite of test/run_all.sh: build postgresql-15-secretenv
# from a clean copy of the tree with dpkg-buildpackage (pg_buildext; its
# build-time test runs pg_regress against the files just built), install it
# with apt-get, run pg_regress again through the autopkgtest hook
# (debian/tests/installcheck: a pg_virtualenv cluster that preloads the
# installed library, and `make installcheck` against it), then remove it.
#
# Files found at the package's paths beforehand (those of `make install`)
# are kept aside and put back afterwards, so the system is left as it was;
# a package that was already installed stays installed.
#
# Usage (as root):  bash test/package.sh [TOP [LOGDIR]]
# Prints one "ok"/"not ok" line per check, then "package: N passed, N failed".
set -uo pipefail

top=$(cd "${1:-$(dirname "$0")/..}" && pwd)
logdir=${2:-$(mktemp -d /tmp/secretenv-logs.XXXXXX)}
pkg=postgresql-15-secretenv
if [ "$(id -u)" -ne 0 ]; then
	echo "package.sh must run as root: it installs and removes the package." >&2
	exit 2
fi

passed=0
failed=0
check() {
	local label=$1
	shift
	if "$@"; then
		echo "ok - $label"; passed=$((passed + 1))
	else
		echo "not ok - $label"; failed=$((failed + 1))
	fi
}
# pg_regress results of a log: one check per test file; none at all fails.
count_regress() {
	local log=$1 label=$2 ok bad
	ok=$(grep -cE '^(test| ) *[a-z_]+ +\.\.\. ok ' "$log")
	bad=$(grep -cE '\.\.\. FAILED|\.\.\. failed' "$log")
	echo "$label: $ok pg_regress files ok, $bad failed"
	passed=$((passed + ok))
	failed=$((failed + bad))
	if [ "$ok" -eq 0 ] || [ "$bad" -gt 0 ]; then
		[ "$ok" -eq 0 ] && [ "$bad" -eq 0 ] && failed=$((failed + 1))
		grep -A200 'regression.diffs' "$log" | head -120
	fi
}
finish() {
	echo "logs: $logdir/package-*.log"
	echo "package: $passed passed, $failed failed"
	[ "$failed" -eq 0 ]
	exit
}

dir=$(mktemp -d /tmp/secretenv-deb.XXXXXX)
trap 'rm -rf "$dir"' EXIT
# The build-time test's cluster runs as postgres and reads the build tree.
chmod 755 "$dir"

# A clean copy: no build products of the working tree (a VPATH build would
# take a stale object file of the source tree for up to date).
cp -a "$top/." "$dir/secretenv"
rm -rf "$dir/secretenv/.git"
make -C "$dir/secretenv" -s clean >/dev/null 2>&1
check "clean copy of the tree" \
	test -z "$(find "$dir/secretenv" \( -name '*.o' -o -name '*.so' -o -name '*.bc' \) -print -quit)"

start=$SECONDS
(cd "$dir/secretenv" && dpkg-buildpackage -us -uc -b) >"$logdir/package-build.log" 2>&1
build_rc=$?
deb=
for f in "$dir/${pkg}"_*_*.deb; do [ -f "$f" ] && deb=$f; done
check "dpkg-buildpackage -us -uc -b builds $(basename "${deb:-$pkg.deb}") ($((SECONDS - start)) s)" \
	test "$build_rc" -eq 0 -a -n "$deb"
[ "$build_rc" -eq 0 ] || tail -40 "$logdir/package-build.log"
count_regress "$logdir/package-build.log" "build-time test (files in debian/$pkg)"
[ -n "$deb" ] || finish

# The package holds the library, the control file, every install and
# upgrade script of sql/, and the sample passphrase commands.
contents=$(dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|')
has_all() {
	local f
	for f in /usr/lib/postgresql/15/lib/secretenv.so \
		/usr/share/postgresql/15/extension/secretenv.control \
		$(cd "$top/sql" && ls secretenv--*.sql | sed 's|^|/usr/share/postgresql/15/extension/|') \
		/usr/share/doc/$pkg/examples/secretenv-passphrase-file \
		/usr/share/doc/$pkg/examples/secretenv-passphrase-vault; do
		grep -qx "$f" <<<"$contents" || { echo "missing from the package: $f"; return 1; }
	done
}
check "the package holds the library, control file, scripts and examples" has_all

# Keep aside what is at the package's paths and not owned by a package.
files=$(grep -v '/$' <<<"$contents")
was_installed=no
dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" && was_installed=yes
mkdir "$dir/aside"
for f in $files; do
	if [ -e "$f" ] && ! dpkg -S "$f" >/dev/null 2>&1; then
		mkdir -p "$dir/aside$(dirname "$f")"
		cp -a "$f" "$dir/aside$f"
	fi
done

export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --reinstall "$deb" >"$logdir/package-install.log" 2>&1
check "apt-get install ./$(basename "$deb")" test $? -eq 0
check "the installed files are the package's (dpkg -V)" \
	test -z "$(dpkg -V "$pkg" 2>&1)" -a "$(dpkg -S /usr/lib/postgresql/15/lib/secretenv.so 2>/dev/null | cut -d: -f1)" = "$pkg"

# The autopkgtest hook, run from the source tree as autopkgtest does.
(cd "$dir/secretenv" && debian/tests/installcheck) >"$logdir/package-installcheck.log" 2>&1
check "debian/tests/installcheck against the installed package" test $? -eq 0
count_regress "$logdir/package-installcheck.log" "installed package"

if [ "$was_installed" = no ]; then
	dpkg -r "$pkg" >"$logdir/package-remove.log" 2>&1
	check "dpkg -r $pkg" test $? -eq 0
	gone() { local f; for f in $files; do [ -e "$f" ] && [ ! -d "$f" ] && { echo "left behind: $f"; return 1; }; done; return 0; }
	check "removal leaves none of its files" gone
fi

# Put back what was there before.
aside=$(cd "$dir/aside" && find . -type f | sed 's|^\.||')
for f in $aside; do
	mkdir -p "$(dirname "$f")"
	cp -a "$dir/aside$f" "$f"
done
restored() {
	local f
	for f in $aside; do
		cmp -s "$dir/aside$f" "$f" || { echo "not restored: $f"; return 1; }
	done
}
[ -z "$aside" ] || check "the $(wc -w <<<"$aside") files found before are back" restored

finish
