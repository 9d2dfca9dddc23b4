/*-------------------------------------------------------------------------
 *
 * key_freshness.c
 *	  Rotation, re-encryption and status() act on the key settings the
 *	  server last loaded, never on a stale view of them.
 *
 * pg_reload_conf() only sends SIGHUP to the postmaster and returns.  The
 * postmaster then re-reads the configuration files and signals every
 * backend, and a backend applies the new settings only when it is next idle
 * between statements.  So "reload, rotate, check" run back to back, in the
 * calling session or in any other, would rotate under the old keys, find
 * nothing to do and call the rotation complete.
 *
 * Before they read a key setting, these entry points therefore:
 *	  1. wait until the postmaster has handled every SIGHUP sent to it so
 *		 far: on Linux, until /proc/<postmaster>/status shows SIGHUP neither
 *		 pending nor blocked.  PostgreSQL 15's postmaster handles signals
 *		 only while it sleeps in its server loop, with every signal
 *		 unblocked; it blocks them while it works and while a handler runs.
 *		 So "not pending and not blocked" means any reload requested before
 *		 this moment has been loaded, and the postmaster has already
 *		 signalled this backend;
 *		 From PostgreSQL 16 the postmaster's handler only sets a flag and
 *		 wakes its server loop (a SIGURG to itself), which reloads after
 *		 the handler returned, so the postmaster also counts as busy while
 *		 that SIGURG is pending or while it is not asleep (State "S": its
 *		 loop sleeps in epoll_wait, and reloading runs).  With preload the
 *		 postmaster also sleeps while it reloads: in poll(), waiting for
 *		 the passphrase or key command it runs for the new settings, which
 *		 /proc cannot tell from its idle loop (until the command's exec its
 *		 child even shows as "postgres").  So it counts as busy while its
 *		 count of KEK refreshes (keyring.c, in shared memory) is odd, or
 *		 changed while /proc was read.  The refresh is the last thing the
 *		 reload does before it signals the backends, and the only time the
 *		 postmaster runs a command (without preload it runs none);
 *	  2. apply that pending reload in this backend now (ProcessConfigFile,
 *		 as the main loop would do when idle).  Settings read from the
 *		 files never take part in transaction rollback (guc.c makes them
 *		 the reset value beneath any session or function-local value), so
 *		 applying them inside a function call is safe; PostgreSQL itself
 *		 does so inside VACUUM since version 16.
 * Where /proc is not available, step 1 is skipped: a reload that this
 * backend has been told about is applied, the race with a postmaster that
 * has not yet read the files remains, and the README says so.
 *
 * Without preload only /proc is involved; with preload also the count of
 * refreshes that the postmaster keeps in shared memory.  The postmaster is
 * only observed, never asked to do anything: no lock, no signal.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/parallel.h"
#include "miscadmin.h"
#include "postmaster/interrupt.h"
#include "storage/fd.h"
#include "utils/guc.h"

#include "keys/keyring.h"
#include "pg_compat.h"
#include "se_messages.h"

/* How long to wait for the postmaster to finish handling a reload. */
#define RELOAD_WAIT_MS 10000

typedef enum PostmasterState
{
	POSTMASTER_IDLE,			/* SIGHUP neither pending nor blocked */
	POSTMASTER_BUSY,			/* a reload is pending, or it is working */
	POSTMASTER_UNKNOWN			/* no /proc: cannot tell */
} PostmasterState;

/* Parse one "Name:\t<hex mask>" line of /proc/<pid>/status. */
static bool
signal_mask_line(const char *line, const char *name, uint64 *mask)
{
	size_t		len = strlen(name);
	unsigned long long value;

	if (strncmp(line, name, len) != 0 || line[len] != ':')
		return false;
	if (sscanf(line + len + 1, " %llx", &value) != 1)
		return false;
	*mask = (uint64) value;
	return true;
}

static PostmasterState
postmaster_state(void)
{
	char		path[MAXPGPATH];
	char		line[256];
	FILE	   *file;
	uint64		pending = 0;
	uint64		blocked = 0;
	uint64		mask;
	int			found = 0;
	uint64		sighup = UINT64CONST(1) << (SIGHUP - 1);
	uint64		sigurg = UINT64CONST(1) << (SIGURG - 1);
	char		state = '?';
	uint32		refreshes = se_keyring_postmaster_refreshes();

	/* Refreshing its KEKs, the postmaster may look asleep: see the header. */
	if (refreshes % 2 == 1)
		return POSTMASTER_BUSY;
	snprintf(path, sizeof(path), "/proc/%d/status", (int) PostmasterPid);
	file = AllocateFile(path, "r");
	if (file == NULL)
		return POSTMASTER_UNKNOWN;
	while (fgets(line, sizeof(line), file) != NULL)
	{
		if (signal_mask_line(line, "SigPnd", &mask) ||
			signal_mask_line(line, "ShdPnd", &mask))
		{
			pending |= mask;
			found++;
		}
		else if (signal_mask_line(line, "SigBlk", &mask))
		{
			blocked = mask;
			found++;
		}
		else if (strncmp(line, "State:", 6) == 0)
			(void) sscanf(line + 6, " %c", &state);
	}
	FreeFile(file);
	/* A refresh began (and may have ended) while /proc was read. */
	if (se_keyring_postmaster_refreshes() != refreshes)
		return POSTMASTER_BUSY;
	if (found != 3)
		return POSTMASTER_UNKNOWN;
	if (((pending | blocked) & sighup) != 0)
		return POSTMASTER_BUSY;
	if (POSTMASTER_DEFERS_SIGNALS_COMPAT &&
		((pending & sigurg) != 0 || state != 'S'))
		return POSTMASTER_BUSY;
	return POSTMASTER_IDLE;
}

static void
apply_pending_key_settings(void)
{
	/* A parallel worker has its leader's settings; the postmaster has none to give. */
	if (!IsUnderPostmaster || IsParallelWorker())
		return;

	for (int waited = 0; postmaster_state() == POSTMASTER_BUSY; waited++)
	{
		if (waited >= RELOAD_WAIT_MS)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("could not confirm that this session uses the key settings the server last loaded"),
					 errdetail("The postmaster did not finish handling a configuration reload within %d ms.",
							   RELOAD_WAIT_MS),
					 errhint("Retry once the reload has completed.")));
		CHECK_FOR_INTERRUPTS();
		pg_usleep(1000L);
	}

	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
	}
}

/*
 * Apply a configuration reload that the server has loaded but this session
 * has not, then return the version of the current KEK.
 */
PG_FUNCTION_INFO_V1(secret_loaded_kek_version);
Datum
secret_loaded_kek_version(PG_FUNCTION_ARGS)
{
	apply_pending_key_settings();
	PG_RETURN_INT32(se_keyring_current_version());
}
