/*-------------------------------------------------------------------------
 *
 * audit_init.c
 *	  The audit area's init: its parts' inits, in order.
 *
 * The settings and the shared-memory queue, the executor hooks that record
 * refused writes, then, only when preloaded
 * (the queue exists only then), the launcher of the writers.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"

#include "areas.h"
#include "audit/audit.h"

void
se_audit_area_init(void)
{
	se_audit_init();
	se_audit_hooks_init();
	if (process_shared_preload_libraries_in_progress)
		se_audit_worker_register();
}
