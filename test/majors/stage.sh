# Sourced by test/run_all.sh: the stages of the PostgreSQL majors other than
# the host's 15.  run_major_stages MAJOR... provisions (or reuses) each
# major's chroot and runs the suites there; it reports through the caller's
# record() with $major set to "pgNN", $top and $logdir being the caller's.
. "$(dirname "${BASH_SOURCE[0]}")/chroot.sh"

# The other majors run side by side: their TAP files wait on timers and
# on other processes much of the time, so on two cores three majors at
# once take about as long as the slowest one alone (measured on the 2-core
# CI machine: 17, 18 and 19 side by side finished within 18 minutes; each
# took 10 to 18 minutes of that wall time).  On 17 and 19 the TAP
# files below run: the MLflow vectors, rotation, cache coherence,
# redaction, the hostile search_path, the upgrades (of the extension,
# and pg_upgrade from 15) and the audit queue across crash restarts and
# shutdowns (the postmaster's own paths); 18, the newest stable major, runs
# every file as 15 does.
majors_tap="001_rotation_10k 010_mlflow_vectors 040_cache_stress 041_cache_replicas
	042_cache_roles 043_cache_2pc 044_cache_timer 051_online_rotation 060_log_redaction
	061_key_health 062_redact_channels 063_redact_wrapper 064_redact_preload_order
	065_redact_scrub_shapes 066_redact_activity_extended 067_redact_failure_paths
	070_upgrade_equivalence
	075_hostile_search_path 085_batched_rotation 086_rotate_table 087_reencrypt
	079_pg_upgrade_major 093_upgrade_names 108_audit_crash_restart"

# major_stage MAJOR: provision (or reuse) its chroot, then run the suites
# there; everything goes to files under $logdir/pgMAJOR, read by
# run_major_stages.
major_stage() {
	local m=$1 mlog=$logdir/pg$1 rc root files f start
	mkdir -p "$mlog"
	start=$(date +%s)
	timeout -k 30 1200 bash "$top/test/majors/provision.sh" "$m" >"$mlog/provision.log" 2>&1
	rc=$?
	echo "$rc" >"$mlog/provision.rc"
	root=$(tail -1 "$mlog/provision.log")
	if [ "$rc" -eq 0 ] && [ -f "$root/.secretenv-complete" ]; then
		files=
		if [ "$m" != 18 ]; then
			for f in $majors_tap; do files="$files test/t/$f.pl"; done
		fi
		# shellcheck disable=SC2086
		timeout -k 30 2700 bash "$top/test/majors/run_suites.sh" "$m" "$root" "$mlog" $files \
			>"$mlog/summary.log" 2>&1
		echo $? >"$mlog/suites.rc"
		chroot_cleanup "$root"
	fi
	echo $(( $(date +%s) - start )) >"$mlog/seconds"
}

# run_major_stages MAJOR...: every major's stage at once, then their
# records, major by major.
run_major_stages() {
	local m mlog rc suite p f s
	for m in "$@"; do
		major_stage "$m" &
	done
	wait
	for m in "$@"; do
		major=pg$m
		mlog=$logdir/$major
		rc=$(cat "$mlog/provision.rc" 2>/dev/null || echo 1)
		if [ "$rc" -ne 0 ] || [ ! -f "$mlog/summary.log" ]; then
			tail -20 "$mlog/provision.log"
			[ "$rc" -eq 124 ] && echo "$major: provisioning timed out after 20 minutes"
			record "$major provision" 0 1
			continue
		fi
		grep -E '^(reusing|provisioned|note:)' "$mlog/provision.log"
		record "$major provision" 1 0
		[ "$m" != 18 ] && echo "$major: TAP files $(echo $majors_tap | wc -w) of $(ls "$top"/test/t/*.pl | wc -l) (see docs/postgresql-versions.md)"
		grep -vE '^[a-z_]+: [0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$' "$mlog/summary.log" | tail -80
		while read -r suite p _ f _ s _; do
			record "$major ${suite%:}" "$p" "$f" "$s"
		done < <(grep -E '^[a-z_]+: [0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$' "$mlog/summary.log")
		rc=$(cat "$mlog/suites.rc" 2>/dev/null || echo 1)
		if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
			echo "$major: the suites timed out after 45 minutes"
			record "$major timeout" 0 1
		fi
		echo "$major: $(cat "$mlog/seconds")s"
	done
}
