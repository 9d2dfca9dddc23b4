/*-------------------------------------------------------------------------
 *
 * drop_guard.h
 *	  No DROP EXTENSION, DROP SCHEMA or DROP OWNED while secrets are stored.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRETENV_DROP_GUARD_H
#define SECRETENV_DROP_GUARD_H

/* drop_guard.c */
extern void se_drop_guard_init(void);

#endif							/* SECRETENV_DROP_GUARD_H */
