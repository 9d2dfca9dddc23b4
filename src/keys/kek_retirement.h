/*-------------------------------------------------------------------------
 *
 * kek_retirement.h
 *	  secretenv.min_kek_version: KEK versions retired from reading.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRETENV_KEK_RETIREMENT_H
#define SECRETENV_KEK_RETIREMENT_H

/* kek_retirement.c */
extern void se_retirement_init(void);
extern int32 se_min_kek_version(void);
extern bool se_kek_version_retired(int32 version);
extern void se_check_not_retired(int32 version);
extern void se_check_current_not_retired(int32 current);

#endif							/* SECRETENV_KEK_RETIREMENT_H */
