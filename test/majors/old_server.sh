#!/usr/bin/env bash
# Put the host's PostgreSQL 15 (Debian 12's packages) into a newer major's
# chroot, at its own paths, with secretenv 1.1 built against it: pg_upgrade
# needs the old and the new major's binaries on one filesystem
# (test/t/079_pg_upgrade_major.pl).
#
# Usage (as root):  test/majors/old_server.sh CHROOT
# The shared libraries of 15 that the chroot's Debian suite no longer ships
# (other sonames: ICU, LDAP, ...) are copied into
# /usr/lib/postgresql/15/host-lib and made known to the chroot's ld.so; a
# soname the chroot has is taken from the chroot.
#
# secretenv 1.1 is the library of the 1.1 release, built from git (the
# commit before "Version 1.2 begins"); in a clone without that history the
# current tree's library, which serves 1.1 databases, stands in (said so).
set -euo pipefail

root=$(cd "${1:?usage: old_server.sh CHROOT}" && pwd)
top=$(cd "$(dirname "$0")/../.." && pwd)
old=/usr/lib/postgresql/15
[ -x "$old/bin/pg_config" ] || { echo "old_server.sh: no PostgreSQL 15 on the host" >&2; exit 1; }

rm -rf "$root$old" "$root/usr/share/postgresql/15"
mkdir -p "$root/usr/lib/postgresql" "$root/usr/share/postgresql"
cp -a "$old" "$root$old"
cp -a /usr/share/postgresql/15 "$root/usr/share/postgresql/15"
rm -f "$root$old/lib/secretenv.so" "$root/usr/share/postgresql/15/extension/secretenv"*

# Shared libraries missing from the chroot.
mkdir -p "$root$old/host-lib"
for f in "$old"/bin/* "$old"/lib/*.so; do
	ldd "$f" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}'
done | sort -u | while read -r soname path; do
	case "$soname" in libc.so.*|libm.so.*|ld-linux*|libpthread.so.*|libdl.so.*|librt.so.*) continue ;; esac
	if ! ls "$root"/usr/lib/x86_64-linux-gnu/"$soname" "$root"/lib/x86_64-linux-gnu/"$soname" >/dev/null 2>&1; then
		cp -L "$path" "$root$old/host-lib/$soname"
	fi
done
echo "$old/host-lib" >"$root/etc/ld.so.conf.d/zz-secretenv-pg15.conf"
chroot "$root" ldconfig

# secretenv 1.1 for 15, installed into the chroot's copy.
build=$(mktemp -d /tmp/secretenv-old.XXXXXX)
trap 'rm -rf "$build"' EXIT
release=$(git -C "$top" log --format=%H -1 --grep='^Version 1.2 begins' 2>/dev/null || true)
if [ -n "$release" ] && git -C "$top" archive "$release^" | tar -C "$build" -xf - 2>/dev/null; then
	echo "secretenv 1.1: the release tree $(git -C "$top" rev-parse --short "$release^")"
else
	(cd "$top" && tar --exclude=./.git -cf - .) | tar -C "$build" -xf -
	echo "secretenv 1.1: no release history in this clone, the current tree's library stands in"
fi
make -C "$build" -s PG_CONFIG="$old/bin/pg_config" >"$build/build.log" 2>&1 &&
	make -C "$build" -s PG_CONFIG="$old/bin/pg_config" install DESTDIR="$root" >>"$build/build.log" 2>&1 || {
	tail -30 "$build/build.log" >&2
	exit 1
}
chroot "$root" "$old/bin/postgres" --version
