/*-------------------------------------------------------------------------
 *
 * utility_hook_chain.h
 *	  Pass a utility statement on along the ProcessUtility hook chain.
 *
 * Three areas of secretenv hook ProcessUtility (the cache, the writer
 * counters, redaction), each for its own reason, and each must hand the
 * statement on to the hook installed before it, or to PostgreSQL's own
 * standard_ProcessUtility when there is none.
 *
 *-------------------------------------------------------------------------
 */
#ifndef UTILITY_HOOK_CHAIN_H
#define UTILITY_HOOK_CHAIN_H

#include "tcop/utility.h"

static inline void
se_next_process_utility(ProcessUtility_hook_type next,
						PlannedStmt *pstmt, const char *queryString,
						bool readOnlyTree, ProcessUtilityContext context,
						ParamListInfo params, QueryEnvironment *queryEnv,
						DestReceiver *dest, QueryCompletion *qc)
{
	if (next)
		next(pstmt, queryString, readOnlyTree, context, params, queryEnv,
			 dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);
}

#endif							/* UTILITY_HOOK_CHAIN_H */
