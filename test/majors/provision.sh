#!/usr/bin/env bash
# Provide a PostgreSQL major other than the host's 15: a `debootstrap
# --variant=minbase` chroot of the Debian suite that carries it, holding the
# server, its -dev package (PGXS, pg_regress, the isolation tester and the TAP
# modules) and what the suites need, exactly as Debian's users install them.
#
# Usage (as root):  test/majors/provision.sh MAJOR
# Prints the chroot's directory as its last line of output.
#
# Chroots are cached in $SECRETENV_MAJORS_CACHE (default
# /var/cache/secretenv-majors) as <suite>-<exact server package version>/ and
# reused while the archive still serves that version; a chroot whose version
# the archive no longer serves is left in place, a new one is built beside it.
# When the archive cannot be reached, the newest cached chroot is reused.
set -euo pipefail

major=${1:?usage: provision.sh MAJOR}
here=$(cd "$(dirname "$0")" && pwd)
. "$here/chroot.sh"

mirror=${SECRETENV_DEBIAN_MIRROR:-http://deb.debian.org/debian}
cache=${SECRETENV_MAJORS_CACHE:-/var/cache/secretenv-majors}
case "$major" in
	17) suite=trixie; extra_suite= ;;
	18) suite=sid; extra_suite= ;;
	19) suite=sid; extra_suite=experimental ;;
	*) echo "provision.sh: no Debian suite carries PostgreSQL $major" >&2; exit 2 ;;
esac
label=${extra_suite:-$suite}
mkdir -p "$cache"

# The package version a chroot holds (empty when the chroot is incomplete).
chroot_version() {
	[ -f "$1/.secretenv-complete" ] && cat "$1/.secretenv-complete" || true
}

# Reuse: the newest complete chroot for this major, if the archive still
# serves its version (or cannot be asked).
existing=$(ls -d "$cache/$label"-"$major"[.~]* 2>/dev/null | sort -V | tail -1 || true)
if [ -n "$existing" ] && [ -n "$(chroot_version "$existing")" ]; then
	have=$(chroot_version "$existing")
	want=$(chroot_run "$existing" sh -c "apt-get update -qq >/dev/null 2>&1 && apt-cache policy postgresql-$major | awk '/Candidate:/ {print \$2}'" 2>/dev/null || true)
	if [ -z "$want" ] || [ "$want" = "$have" ]; then
		echo "reusing $existing (postgresql-$major $have${want:+, current}${want:-, archive unreachable})"
		echo "$existing"
		exit 0
	fi
	echo "the archive now serves postgresql-$major $want (cached: $have): building a new chroot"
fi

# What an earlier run cut short left behind (its process is gone).
for stale in "$cache/.building-$label-$major".*; do
	[ -d "$stale" ] || continue
	kill -0 "${stale##*.}" 2>/dev/null && continue
	chroot_cleanup "$stale"
	rm -rf --one-file-system "$stale"
done
build="$cache/.building-$label-$major.$$"
rm -rf "$build"
cleanup_build() { chroot_cleanup "$build" 2>/dev/null || true; rm -rf --one-file-system "$build"; }
trap cleanup_build EXIT
trap 'exit 1' INT TERM
start=$(date +%s)

echo "debootstrap $suite into $build"
debootstrap --variant=minbase "$suite" "$build" "$mirror" >"$cache/.debootstrap-$label-$major.log" 2>&1 || {
	tail -20 "$cache/.debootstrap-$label-$major.log" >&2
	echo "provision.sh: debootstrap $suite failed" >&2
	exit 1
}

echo "deb $mirror $suite main" >"$build/etc/apt/sources.list"
if [ -n "$extra_suite" ]; then
	# Only PostgreSQL's own packages come from the extra suite; the rest
	# (perl, python, the toolchain) from $suite.
	echo "deb $mirror $extra_suite main" >>"$build/etc/apt/sources.list"
	mkdir -p "$build/etc/apt/preferences.d"
	printf 'Package: postgresql* libpq*\nPin: release a=%s\nPin-Priority: 500\n' \
		"$extra_suite" >"$build/etc/apt/preferences.d/secretenv"
fi
# No service starts inside the chroot, and installing a server creates no cluster.
printf '#!/bin/sh\nexit 101\n' >"$build/usr/sbin/policy-rc.d"
chmod 755 "$build/usr/sbin/policy-rc.d"
mkdir -p "$build/etc/postgresql-common"
echo "create_main_cluster = false" >"$build/etc/postgresql-common/createcluster.conf"

packages="postgresql-$major postgresql-server-dev-$major build-essential libssl-dev
	libipc-run-perl python3 python3-psycopg2 python3-cryptography procps gdb pgbouncer
	locales make debhelper dpkg-dev fakeroot postgresql-common-dev"
# The archive reachable here may serve a sid/experimental Release file past
# its Valid-Until date (a frozen mirror): accept it rather than fail.
echo 'Acquire::Check-Valid-Until "false";' >"$build/etc/apt/apt.conf.d/99secretenv"
chroot_run "$build" apt-get update -q >"$cache/.apt-$label-$major.log" 2>&1 || {
	tail -20 "$cache/.apt-$label-$major.log" >&2
	echo "provision.sh: apt-get update in $suite failed" >&2
	exit 1
}
# pgaudit for this major, when the suite carries it.
if chroot_run "$build" apt-cache show "postgresql-$major-pgaudit" >/dev/null 2>&1; then
	packages="$packages postgresql-$major-pgaudit"
else
	echo "note: Debian $label has no postgresql-$major-pgaudit"
fi
chroot_run "$build" env DEBIAN_FRONTEND=noninteractive \
	apt-get install -y -q --no-install-recommends $packages >>"$cache/.apt-$label-$major.log" 2>&1 || {
	tail -30 "$cache/.apt-$label-$major.log" >&2
	echo "provision.sh: installing postgresql-$major in $suite failed" >&2
	exit 1
}
chroot_run "$build" apt-get clean
version=$(chroot_run "$build" dpkg-query -W -f='${Version}' "postgresql-$major")
chroot_run "$build" "/usr/lib/postgresql/$major/bin/postgres" --version

final="$cache/$label-$version"
chroot_umount "$build"
echo "$version" >"$build/.secretenv-complete"
rm -rf "$final"
mv "$build" "$final"
trap - EXIT
echo "provisioned postgresql-$major $version in $(( $(date +%s) - start ))s"
echo "$final"
