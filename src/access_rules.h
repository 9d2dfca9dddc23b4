/*-------------------------------------------------------------------------
 *
 * access_rules.h
 *	  Per-application access rules on secretenv.secrets (DESIGN §8f).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRETENV_ACCESS_RULES_H
#define SECRETENV_ACCESS_RULES_H

/*
 * Access rules exist but row-level security or a policy that enforces them
 * was lost (class 55, object not in prerequisite state).
 */
#define ERRCODE_SECRETENV_ACCESS_NOT_ENFORCED	MAKE_SQLSTATE('5','5','S','0','1')

extern void se_access_rules_init(void);
extern void se_access_check_enforced(Oid userid);
extern bool se_access_policies_bind(Oid userid);

#endif							/* SECRETENV_ACCESS_RULES_H */
