/*-------------------------------------------------------------------------
 *
 * coherence.h
 *	  When secret_get() may serve or fill the credential cache.
 *
 * The rule and its argument are in coherence.c's header comment.  The
 * protocol for one secret_get call, in this order:
 *
 *	may_serve = se_coherence_begin();		before anything reads the table
 *	... privilege and row-level security checks ...
 *	if (may_serve) try se_cache_lookup(GetUserId(), name)
 *	ticket = se_coherence_ticket();			before the read
 *	... read the row with the caller's snapshot ...
 *	if (may_serve && se_coherence_row_is_latest(rel, tid, slot) &&
 *		se_coherence_may_fill(ticket))
 *		se_cache_insert(...)
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRETENV_COHERENCE_H
#define SECRETENV_COHERENCE_H


#include "executor/tuptable.h"
#include "storage/itemptr.h"
#include "utils/relcache.h"

extern Oid	se_secrets_relid(void);
extern Oid	se_cache_signal_relid(void);
extern void se_coherence_init(void);
extern bool se_coherence_begin(void);
extern uint64 se_coherence_ticket(void);
extern bool se_coherence_row_is_latest(Relation rel, ItemPointer tid,
									   TupleTableSlot *slot);
extern bool se_coherence_may_fill(uint64 ticket);

#endif							/* SECRETENV_COHERENCE_H */
