# Sourced by the scripts of test/majors/: run a command inside a chroot with
# /proc, /dev/pts and /dev/shm mounted, and unmount them whatever happens.

# chroot_umount ROOT: unmount what chroot_run mounted (innermost first).
chroot_umount() {
	local root=$1 m
	for m in dev/shm dev/pts proc; do
		if mountpoint -q "$root/$m" 2>/dev/null; then
			umount "$root/$m" 2>/dev/null || umount -l "$root/$m"
		fi
	done
}

# chroot_run ROOT COMMAND...: run COMMAND as root inside ROOT.  Mounts are
# shared by concurrent runs in the same ROOT: the first mounts, every run
# unmounts only when it is the last (a lock file counts the users).
chroot_run() {
	local root=$1 rc
	shift
	(
		flock 9
		local n
		n=$(cat "$root/.secretenv-users" 2>/dev/null || echo 0)
		if [ "$n" -eq 0 ]; then
			mkdir -p "$root/proc" "$root/dev/pts" "$root/dev/shm"
			mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
			mountpoint -q "$root/dev/pts" || mount -t devpts -o newinstance,ptmxmode=0666 devpts "$root/dev/pts"
			mountpoint -q "$root/dev/shm" || mount -t tmpfs -o mode=1777 shm "$root/dev/shm"
		fi
		echo $((n + 1)) >"$root/.secretenv-users"
	) 9>"$root/.secretenv-lock"
	rc=0
	LC_ALL=C.UTF-8 LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		chroot "$root" "$@" || rc=$?
	(
		flock 9
		local n
		n=$(cat "$root/.secretenv-users" 2>/dev/null || echo 1)
		n=$((n - 1))
		echo "$n" >"$root/.secretenv-users"
		[ "$n" -gt 0 ] || chroot_umount "$root"
	) 9>"$root/.secretenv-lock"
	return "$rc"
}

# chroot_cleanup ROOT: after a run that may have been cut short (a timeout),
# stop what still runs inside ROOT (processes whose root directory is ROOT:
# only this run's clusters and tools live there), then unmount.
chroot_cleanup() {
	local root pid
	root=$(cd "$1" && pwd -P)
	for pid in $(ls /proc | grep -E '^[0-9]+$'); do
		[ "$(readlink "/proc/$pid/root" 2>/dev/null)" = "$root" ] && kill -KILL "$pid" 2>/dev/null
	done
	sleep 1
	echo 0 >"$root/.secretenv-users"
	chroot_umount "$root"
}
