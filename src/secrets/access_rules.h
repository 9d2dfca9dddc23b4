/*-------------------------------------------------------------------------
 *
 * access_rules.h
 *	  Per-application access rules on secretenv.secrets (DESIGN §8f).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRETENV_ACCESS_RULES_H
#define SECRETENV_ACCESS_RULES_H

extern void se_access_rules_init(void);
extern void se_access_check_enforced(Oid userid);
extern bool se_access_policies_bind(Oid userid);

#endif							/* SECRETENV_ACCESS_RULES_H */
