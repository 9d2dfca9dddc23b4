/*-------------------------------------------------------------------------
 *
 * cache_init.c
 *	  The cache area's init: its parts' inits, in order.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "areas.h"
#include "cache/cache.h"
#include "cache/coherence.h"
#include "cache/writer_counters.h"

void
se_cache_area_init(void)
{
	se_cache_init();
	se_coherence_init();
	se_writers_init();
}
