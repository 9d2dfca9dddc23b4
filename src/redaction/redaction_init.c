/*-------------------------------------------------------------------------
 *
 * redaction_init.c
 *	  The redaction area's init: its parts' inits, in order.
 *
 * The settings first (secretenv.redact_logs, then secretenv.redact_names
 * with the catalog's invalidation callbacks), then the log hook, then the
 * hooks of pg_stat_activity and pg_stat_statements, which also warn when
 * pg_stat_statements is preloaded after secretenv.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "areas.h"
#include "redaction/redact.h"

void
se_redaction_area_init(void)
{
	se_redact_init();
	se_redact_catalog_init();
	se_redact_log_init();
	se_redact_stats_init();
}
