/*-------------------------------------------------------------------------
 *
 * areas.h
 *	  Each area's init, in the order _PG_init calls them.
 *
 * An area (a folder of src/, see docs/layout.md) defines its GUCs, hooks,
 * shared memory and background workers in its parts' init functions; its
 * <area>_init.c calls them in order and is called by no part, so that no
 * part calls back into a file that calls it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRETENV_AREAS_H
#define SECRETENV_AREAS_H

/* keys/keys_init.c: the engine, the key commands, the keyring, its health */
extern void se_keys_area_init(void);

/* cache/cache_init.c: the credential cache, its coherence, the writers */
extern void se_cache_area_init(void);

/* redaction/redaction_init.c: its settings, then its hooks */
extern void se_redaction_area_init(void);

/* secrets/secrets_init.c: the drop guard and the access rules */
extern void se_secrets_area_init(void);

/* audit/audit_init.c: the audit queue and its writers */
extern void se_audit_area_init(void);

/* versions/versions_init.c: max_versions and the recovery window */
extern void se_versions_area_init(void);

#endif							/* SECRETENV_AREAS_H */
