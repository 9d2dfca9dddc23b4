/*-------------------------------------------------------------------------
 *
 * envelope_memo.c
 *	  Make the columns of one secret_encrypt(...).* agree.
 *
 * PostgreSQL expands "(secretenv.secret_encrypt(v, id, name)).*" into one
 * copy of the call per output column, each with its own FmgrInfo, and
 * evaluates them one after the other for every row.  Left alone, each copy
 * draws its own DEK: the stored encrypted_value, wrapped_dek and kek_version
 * come from three different envelopes and the row never decrypts.
 *
 * So an envelope made by one call is remembered, and a sibling copy of the
 * same call evaluating the same row gets that envelope back instead of a
 * new one.  Three things identify "a sibling copy, for the same row":
 *
 *	- the same call site: the copies are copyObject() of one parse node, so
 *	  they are equal() and share the parse location; two calls written
 *	  separately in a query have different locations and never share;
 *	- the same row: the memo lives in the memory context that is current
 *	  while the call runs, which for an expression is the per-tuple context
 *	  that the executor resets before the next row.  The memo's reset
 *	  callback forgets (and wipes) it, so an envelope never crosses a row
 *	  boundary that a reset marks;
 *	- a copy that has not taken the envelope yet: every FmgrInfo that
 *	  returned the envelope is recorded.  When one of them is called again
 *	  in the same context, that is the next row (or a second evaluation),
 *	  and it gets a fresh envelope, so two legitimately separate rows with
 *	  equal arguments still get different DEKs and nonces.  The order in
 *	  which the copies run does not matter: whichever comes first makes the
 *	  envelope, the others take it.
 *
 * A sibling copy that finds the envelope made for different arguments can
 * only be the same call evaluated with volatile arguments (e.g. an id of
 * gen_random_uuid()): each column would be encrypted for another id, and no
 * row could decrypt.  That is an ERROR at write time rather than silent
 * loss.
 *
 * Lifetimes.  A caller is named by its fn_extra (envelope_sql.c's blessed
 * tuple descriptor, one per FmgrInfo, allocated in fn_mcxt).  A memo is kept
 * only when the current context is fn_mcxt or one of its descendants (the
 * executor's per-tuple contexts are children of the query context), so a
 * memo, and the fn_expr and fn_extra pointers it holds, never outlive the
 * query whose call site they name.  Calls that do not come from an
 * expression (no fn_expr) are never remembered.
 *
 * Copies split across plan nodes.  A query that sorts or groups by one
 * column of the expansion makes PostgreSQL compute that column below the
 * Sort, for every row, and the others above it: they run in different
 * contexts and cannot share.  To fail loudly there too, each call site
 * (its parse locations within the query) counts, per copy, the envelopes
 * it made and whether it ever shared one.  Copies of a working expansion
 * all share from the first row on.  So it is an ERROR when copies share
 * while another copy of the site has made envelopes alone, or when a copy
 * that made one alone makes another while its siblings share.  A site whose
 * copies never share (an ordinary call, or calls of different plpgsql
 * functions that happen to sit at the same locations) is never checked, nor
 * is a call without a parse location (a view's query is stored without
 * them, so all its calls would look like one site); the memo still makes
 * the copies of such a call agree.  The
 * one split this cannot see is a single row whose sorted columns are
 * computed together below the Sort and the rest above it; check_envelope()
 * catches that in a table, and the LATERAL form never splits.
 *
 * The memo holds the envelope (ciphertext only) and, to compare arguments,
 * a copy of them; the copy of the plaintext lives no longer than the row's
 * own argument values in the same context, and is wiped when the memo is
 * replaced or its context is reset, on error paths too.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/ilist.h"
#include "nodes/nodeFuncs.h"
#include "nodes/pg_list.h"
#include "utils/memutils.h"

#include "crypto/se_crypto.h"
#include "se_messages.h"
#include "secrets/envelope_memo.h"

/*
 * One call site of one query, and the calls (FmgrInfos) seen for it.  For
 * each caller: how many envelopes it made, and whether it ever shared one
 * (made one another copy took, or took one), i.e. whether it is a copy of a
 * "(...).*" expansion that runs in step with its siblings.
 */
typedef struct SiteCaller
{
	const void *caller;			/* the FmgrInfo's fn_extra */
	uint64		made;
	bool		shared;
} SiteCaller;

typedef struct EncryptSite
{
	dlist_node	node;			/* in live_sites */
	MemoryContext fn_mcxt;		/* the query; owns this */
	Oid			fn_oid;
	int			location;		/* of the call ... */
	List	   *arg_locations;	/* ... and of each argument */
	List	   *callers;		/* SiteCaller * */
	MemoryContextCallback callback;
} EncryptSite;

typedef struct EnvelopeMemo
{
	dlist_node	node;			/* in live_memos */
	MemoryContext scope;		/* the row's evaluation context; owns this */
	EncryptSite *site;
	Node	   *expr;			/* fn_expr of the call that made the envelope */
	Datum		envelope;
	List	   *takers;			/* SiteCaller * of every call that returned it */
	char	   *args;			/* value || id || name, wiped */
	size_t		argslen;
	size_t		valuelen;
	int			idlen;
	MemoryContextCallback callback;
} EnvelopeMemo;

/* Every site and memo whose context is alive; reset callbacks unlink them. */
static dlist_head live_sites = DLIST_STATIC_INIT(live_sites);
static dlist_head live_memos = DLIST_STATIC_INIT(live_memos);

static void
wipe_args(EnvelopeMemo *memo)
{
	if (memo->args != NULL)
	{
		se_wipe(memo->args, memo->argslen);
		pfree(memo->args);
		memo->args = NULL;
	}
}

static void
forget_memo(void *arg)
{
	EnvelopeMemo *memo = (EnvelopeMemo *) arg;

	wipe_args(memo);
	dlist_delete(&memo->node);
}

static void
forget_site(void *arg)
{
	dlist_delete(&((EncryptSite *) arg)->node);
}

static bool
same_args(const EnvelopeMemo *memo, const SeEncryptArgs *args)
{
	return memo->valuelen == args->valuelen &&
		memo->idlen == args->idlen &&
		memo->argslen == args->valuelen + args->idlen + args->namelen &&
		memcmp(memo->args, args->value, args->valuelen) == 0 &&
		memcmp(memo->args + args->valuelen, args->id, args->idlen) == 0 &&
		memcmp(memo->args + args->valuelen + args->idlen, args->name, args->namelen) == 0;
}

static void
copy_args(EnvelopeMemo *memo, const SeEncryptArgs *args)
{
	memo->valuelen = args->valuelen;
	memo->idlen = args->idlen;
	memo->argslen = args->valuelen + args->idlen + args->namelen;
	memo->args = MemoryContextAlloc(memo->scope, Max(memo->argslen, 1));
	memcpy(memo->args, args->value, args->valuelen);
	memcpy(memo->args + args->valuelen, args->id, args->idlen);
	memcpy(memo->args + args->valuelen + args->idlen, args->name, args->namelen);
}

/*
 * Whether a memo may be kept for this call: it must come from an expression,
 * and the current context must be the query's or one of its descendants, so
 * that the memo never outlives the call site it points to.
 */
static bool
memo_applies(FmgrInfo *flinfo)
{
	if (flinfo->fn_expr == NULL)
		return false;
	for (MemoryContext cxt = CurrentMemoryContext; cxt != NULL; cxt = cxt->parent)
	{
		if (cxt == flinfo->fn_mcxt)
			return true;
	}
	return false;
}

/*
 * Whether a call's arguments sit at these parse locations.  Parse locations,
 * not equal(): the planner renumbers the Vars of an expression for the plan
 * node that computes it, so copies of one call computed in different nodes
 * are not equal(), but they keep the locations of the query text.
 */
static bool
same_arg_locations(List *locations, List *args)
{
	ListCell   *lc1;
	ListCell   *lc2;

	if (list_length(locations) != list_length(args))
		return false;
	forboth(lc1, locations, lc2, args)
	{
		if (lfirst_int(lc1) != exprLocation((Node *) lfirst(lc2)))
			return false;
	}
	return true;
}

/* The site of this call, and this call's entry in it; made if new. */
static EncryptSite *
find_site(FmgrInfo *flinfo, SiteCaller **caller)
{
	int			location = exprLocation(flinfo->fn_expr);
	List	   *args = IsA(flinfo->fn_expr, FuncExpr) ? ((FuncExpr *) flinfo->fn_expr)->args : NIL;
	EncryptSite *site = NULL;
	dlist_iter	iter;
	ListCell   *lc;
	SiteCaller *entry;
	MemoryContext oldcxt;

	dlist_foreach(iter, &live_sites)
	{
		EncryptSite *candidate = dlist_container(EncryptSite, node, iter.cur);

		if (candidate->fn_mcxt == flinfo->fn_mcxt &&
			candidate->fn_oid == flinfo->fn_oid &&
			candidate->location == location &&
			same_arg_locations(candidate->arg_locations, args))
		{
			site = candidate;
			break;
		}
	}
	if (site == NULL)
	{
		oldcxt = MemoryContextSwitchTo(flinfo->fn_mcxt);
		site = palloc0(sizeof(EncryptSite));
		site->fn_mcxt = flinfo->fn_mcxt;
		site->fn_oid = flinfo->fn_oid;
		site->location = location;
		foreach(lc, args)
			site->arg_locations = lappend_int(site->arg_locations, exprLocation((Node *) lfirst(lc)));
		MemoryContextSwitchTo(oldcxt);
		site->callback.func = forget_site;
		site->callback.arg = site;
		MemoryContextRegisterResetCallback(site->fn_mcxt, &site->callback);
		dlist_push_head(&live_sites, &site->node);
	}

	foreach(lc, site->callers)
	{
		entry = (SiteCaller *) lfirst(lc);
		if (entry->caller == flinfo->fn_extra)
		{
			*caller = entry;
			return site;
		}
	}
	oldcxt = MemoryContextSwitchTo(site->fn_mcxt);
	entry = palloc0(sizeof(SiteCaller));
	entry->caller = flinfo->fn_extra;
	site->callers = lappend(site->callers, entry);
	MemoryContextSwitchTo(oldcxt);
	*caller = entry;
	return site;
}

/*
 * The memo of this call in the current row, or NULL: same site, same
 * context, and an equal() expression (copies computed in one plan node are
 * equal(); calls that merely share locations, such as those of an inlined
 * SQL function called twice, are not).
 */
static EnvelopeMemo *
find_memo(EncryptSite *site, FmgrInfo *flinfo)
{
	dlist_iter	iter;

	dlist_foreach(iter, &live_memos)
	{
		EnvelopeMemo *memo = dlist_container(EnvelopeMemo, node, iter.cur);

		if (memo->scope == CurrentMemoryContext && memo->site == site &&
			(memo->expr == flinfo->fn_expr || equal(memo->expr, flinfo->fn_expr)))
			return memo;
	}
	return NULL;
}

static void
report_out_of_step(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("the columns of one secret_encrypt call were computed in different steps of the plan"),
			 errdetail("PostgreSQL evaluates (secretenv.secret_encrypt(...)).* once per column, and this query computes some of those columns in another plan node (for example below a sort or grouping on one of them), so they would come from different envelopes and no row would decrypt."),
			 errhint("Call secret_encrypt once per row in FROM: ... FROM src, LATERAL secretenv.secret_encrypt(value, id, name) e, and select e.*.")));
}

bool
se_memo_fetch(FunctionCallInfo fcinfo, const SeEncryptArgs *args, Datum *envelope)
{
	EncryptSite *site;
	SiteCaller *caller;
	EnvelopeMemo *memo;
	ListCell   *lc;

	Assert(fcinfo->flinfo->fn_extra != NULL);
	if (!memo_applies(fcinfo->flinfo))
		return false;
	site = find_site(fcinfo->flinfo, &caller);
	memo = find_memo(site, fcinfo->flinfo);
	if (memo == NULL || list_member_ptr(memo->takers, caller))
	{
		/*
		 * A new row for this caller.  A copy that shares with its siblings
		 * never makes two envelopes nobody took; one that does while the
		 * site has copies in step was split from them by the plan.
		 */
		if (site->location >= 0 && caller->made > 0 && !caller->shared)
		{
			foreach(lc, site->callers)
			{
				if (((SiteCaller *) lfirst(lc))->shared)
					report_out_of_step();
			}
		}
		return false;
	}

	if (!same_args(memo, args))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the columns of one secret_encrypt call were computed from different arguments"),
				 errdetail("PostgreSQL evaluates (secretenv.secret_encrypt(...)).* once per column; here the value, id or name changed between those evaluations, so no column set would decrypt."),
				 errhint("Call secret_encrypt once per row in FROM: ... FROM src, LATERAL secretenv.secret_encrypt(value, id, name) e, and select e.*.")));

	/*
	 * This is an expansion.  Every other copy must be in step: either it
	 * shares with its siblings, or it has made nothing yet.  A copy that made
	 * envelopes alone was evaluated elsewhere in the plan, for other rows.
	 */
	foreach(lc, site->callers)
	{
		SiteCaller *other = (SiteCaller *) lfirst(lc);

		if (site->location >= 0 && other != caller && !list_member_ptr(memo->takers, other) &&
			!other->shared && other->made > 0)
			report_out_of_step();
	}
	foreach(lc, memo->takers)
		((SiteCaller *) lfirst(lc))->shared = true;
	caller->shared = true;
	memo->takers = lappend(memo->takers, caller);
	*envelope = memo->envelope;
	return true;
}

void
se_memo_store(FunctionCallInfo fcinfo, const SeEncryptArgs *args, Datum envelope)
{
	EncryptSite *site;
	SiteCaller *caller;
	EnvelopeMemo *memo;

	if (!memo_applies(fcinfo->flinfo))
		return;

	site = find_site(fcinfo->flinfo, &caller);
	caller->made++;
	memo = find_memo(site, fcinfo->flinfo);
	if (memo != NULL)
	{
		/* The next row in a context that was not reset in between. */
		wipe_args(memo);
		list_free(memo->takers);
	}
	else
	{
		memo = MemoryContextAllocZero(CurrentMemoryContext, sizeof(EnvelopeMemo));
		memo->scope = CurrentMemoryContext;
		memo->site = site;
		memo->expr = fcinfo->flinfo->fn_expr;
		memo->callback.func = forget_memo;
		memo->callback.arg = memo;
		MemoryContextRegisterResetCallback(memo->scope, &memo->callback);
		dlist_push_head(&live_memos, &memo->node);
	}
	copy_args(memo, args);
	memo->takers = list_make1(caller);
	memo->envelope = envelope;
}
