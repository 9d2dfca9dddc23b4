/*-------------------------------------------------------------------------
 *
 * shared.c
 *	  secretenv's shared memory: one small struct, only when preloaded.
 *
 * It holds the writer counters of writers.c.  Without
 * shared_preload_libraries there is no shared memory and se_shared()
 * returns NULL; the cache then falls back to reading the table.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"

#include "secretenv.h"
#include "shared.h"

static SecretenvShared *shared = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
shared_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(SecretenvShared)));
}

static void
shared_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("secretenv", sizeof(SecretenvShared), &found);
	if (!found)
	{
		pg_atomic_init_u64(&shared->writers_started, 0);
		pg_atomic_init_u64(&shared->writers_finished, 0);
	}
	LWLockRelease(AddinShmemInitLock);
}

void
se_shared_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = shared_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = shared_startup;
}

SecretenvShared *
se_shared(void)
{
	return shared;
}
