/*-------------------------------------------------------------------------
 *
 * keys_init.c
 *	  The keys area's init: its parts' inits, in order.
 *
 * The engine first (created in the postmaster when preloaded), then the
 * key commands, before the keyring: a preloaded keyring runs its command
 * right away.  The key health launcher is registered only when preloaded,
 * like the shared memory it works on.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"

#include "areas.h"
#include "keys/aead_engine.h"
#include "keys/kek_retirement.h"
#include "keys/key_health.h"
#include "keys/keyring.h"
#include "keys/passphrase_command.h"

void
se_keys_area_init(void)
{
	se_engine_init();
	se_passphrase_command_init();
	se_keyring_init();
	se_retirement_init();
	se_key_health_init();
	if (process_shared_preload_libraries_in_progress)
		se_key_health_worker_register();
}
