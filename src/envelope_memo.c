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
 * What this cannot see: copies evaluated in different plan nodes, which
 * happens when a query sorts or groups by one column of the expansion (that
 * column is computed below the Sort, the others above it).  They run in
 * different contexts and do not share; the README says to use the LATERAL
 * form, and check_envelope() catches such rows in a table.
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

#include "secretenv.h"

typedef struct EnvelopeMemo
{
	dlist_node	node;			/* in live_memos */
	MemoryContext scope;		/* the row's evaluation context; owns this */
	MemoryContext fn_mcxt;		/* the query the call site belongs to */
	Oid			fn_oid;
	int			location;
	Node	   *site;			/* fn_expr of the call that made the envelope */
	Datum		envelope;
	List	   *takers;			/* fn_extra of every call that returned it */
	char	   *args;			/* value || id || name, wiped */
	size_t		argslen;
	size_t		valuelen;
	int			idlen;
	MemoryContextCallback callback;
} EnvelopeMemo;

/* Every memo whose context is alive; a reset callback unlinks each. */
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

/* The memo of this call site in the current row, or NULL. */
static EnvelopeMemo *
find_memo(FunctionCallInfo fcinfo)
{
	FmgrInfo   *flinfo = fcinfo->flinfo;
	int			location = exprLocation(flinfo->fn_expr);
	dlist_iter	iter;

	dlist_foreach(iter, &live_memos)
	{
		EnvelopeMemo *memo = dlist_container(EnvelopeMemo, node, iter.cur);

		if (memo->scope == CurrentMemoryContext &&
			memo->fn_mcxt == flinfo->fn_mcxt &&
			memo->fn_oid == flinfo->fn_oid &&
			memo->location == location &&
			(memo->site == flinfo->fn_expr || equal(memo->site, flinfo->fn_expr)))
			return memo;
	}
	return NULL;
}

bool
se_memo_fetch(FunctionCallInfo fcinfo, const SeEncryptArgs *args, Datum *envelope)
{
	EnvelopeMemo *memo;
	void	   *caller = fcinfo->flinfo->fn_extra;

	Assert(caller != NULL);
	if (!memo_applies(fcinfo->flinfo))
		return false;
	memo = find_memo(fcinfo);
	if (memo == NULL || list_member_ptr(memo->takers, caller))
		return false;			/* a new row: make a new envelope */

	if (!same_args(memo, args))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the columns of one secret_encrypt call were computed from different arguments"),
				 errdetail("PostgreSQL evaluates (secretenv.secret_encrypt(...)).* once per column; here the value, id or name changed between those evaluations, so no column set would decrypt."),
				 errhint("Call secret_encrypt once per row in FROM: ... FROM src, LATERAL secretenv.secret_encrypt(value, id, name) e, and select e.*.")));

	memo->takers = lappend(memo->takers, caller);
	*envelope = memo->envelope;
	return true;
}

void
se_memo_store(FunctionCallInfo fcinfo, const SeEncryptArgs *args, Datum envelope)
{
	FmgrInfo   *flinfo = fcinfo->flinfo;
	EnvelopeMemo *memo;

	if (!memo_applies(flinfo))
		return;

	memo = find_memo(fcinfo);
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
		memo->fn_mcxt = flinfo->fn_mcxt;
		memo->fn_oid = flinfo->fn_oid;
		memo->location = exprLocation(flinfo->fn_expr);
		memo->site = flinfo->fn_expr;
		memo->callback.func = forget_memo;
		memo->callback.arg = memo;
		MemoryContextRegisterResetCallback(memo->scope, &memo->callback);
		dlist_push_head(&live_memos, &memo->node);
	}
	copy_args(memo, args);
	memo->takers = list_make1(flinfo->fn_extra);
	memo->envelope = envelope;
}
