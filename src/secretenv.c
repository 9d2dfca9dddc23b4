/*-------------------------------------------------------------------------
 *
 * secretenv.c
 *	  Module entry point of the secretenv extension.
 *
 * Each area defines its own GUCs and hooks in its se_<area>_init function;
 * this file only calls them, then reserves the "secretenv." GUC prefix.
 * Loaded through shared_preload_libraries, the KEKs are derived here, in
 * the postmaster, and inherited by every backend (see keyring.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/guc.h"

#include "access_rules.h"
#include "aead_engine.h"
#include "audit.h"
#include "cache.h"
#include "coherence.h"
#include "drop_guard.h"
#include "kek_retirement.h"
#include "key_health.h"
#include "keyring.h"
#include "passphrase_command.h"
#include "pg_compat.h"
#include "redact.h"
#include "se_messages.h"
#include "versions/versions.h"
#include "writer_counters.h"

PG_MODULE_MAGIC_COMPAT("secretenv", "1.2");

void		_PG_init(void);

void
_PG_init(void)
{
	/* pg_upgrade's binary-upgrade backends must not derive keys or hook logs. */
	if (IsBinaryUpgrade)
		return;

	se_engine_init();
	/* Before the keyring: a preloaded keyring runs the command right away. */
	se_passphrase_command_init();
	se_keyring_init();
	se_retirement_init();
	se_cache_init();
	se_coherence_init();
	se_writers_init();
	se_key_health_init();
	se_redact_init();
	se_drop_guard_init();
	se_access_rules_init();
	se_audit_init();
	se_versions_init();
	MarkGUCPrefixReserved("secretenv");
}
