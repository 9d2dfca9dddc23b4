/*-------------------------------------------------------------------------
 *
 * key_health.h
 *	  Key health: does the configured KEK open the rows stored in each
 *	  database?  Results per database, and the background worker that
 *	  computes them when secretenv is preloaded.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRETENV_KEY_HEALTH_H
#define SECRETENV_KEY_HEALTH_H

#include "storage/latch.h"

/* key_health.c: results, read by every entry point */
extern void se_key_health_init(void);
extern void se_key_health_warn_once(void);
extern void se_key_health_check_writable(void);
extern void se_key_health_table_changed(void);

/* key_health.c, for the worker: compute this database's result and publish it */
extern void se_key_health_check_database(void);
extern void se_key_health_forget_database(Oid dboid);
extern void se_key_health_set_launcher(Latch *latch);
extern int	se_key_health_take_rechecks(Oid *dboids, int max);

/* key_health_worker.c: the launcher and its per-database workers (keys_init.c) */
extern void se_key_health_worker_register(void);

#endif							/* SECRETENV_KEY_HEALTH_H */
