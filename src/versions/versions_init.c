/*-------------------------------------------------------------------------
 *
 * versions_init.c
 *	  The secret versions area's init: its settings.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "areas.h"
#include "versions/versions.h"

void
se_versions_area_init(void)
{
	se_versions_init();
}
