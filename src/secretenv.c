/*-------------------------------------------------------------------------
 *
 * secretenv.c
 *	  Module entry point of the secretenv extension.
 *
 * Each area (a folder of src/) defines its own GUCs, hooks and workers;
 * this file only calls each area's init (areas.h), then reserves the
 * "secretenv." GUC prefix.
 * Loaded through shared_preload_libraries, the KEKs are derived here, in
 * the postmaster, and inherited by every backend (see keys/keyring.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/guc.h"

#include "areas.h"
#include "pg_compat.h"
#include "se_messages.h"

PG_MODULE_MAGIC_COMPAT("secretenv", "1.2");

void		_PG_init(void);

void
_PG_init(void)
{
	/* pg_upgrade's binary-upgrade backends must not derive keys or hook logs. */
	if (IsBinaryUpgrade)
		return;

	se_keys_area_init();
	se_cache_area_init();
	se_redaction_area_init();
	se_secrets_area_init();
	se_audit_area_init();
	se_versions_area_init();
	MarkGUCPrefixReserved("secretenv");
}
