/*-------------------------------------------------------------------------
 *
 * secrets_init.c
 *	  The secrets area's init: its parts' inits, in order.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "areas.h"
#include "secrets/access_rules.h"
#include "secrets/drop_guard.h"

void
se_secrets_area_init(void)
{
	se_drop_guard_init();
	se_access_rules_init();
}
