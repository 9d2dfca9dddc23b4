/*-------------------------------------------------------------------------
 *
 * redact.c
 *	  Which statements carry a plaintext: the settings and the decision.
 *
 * A plaintext reaches the server as SQL text or as a bind parameter, or
 * leaves secretenv as a function's result, and several channels keep what
 * a statement did: the server log (core statement logging, error messages
 * and their STATEMENT/CONTEXT/DETAIL lines, pgaudit, auto_explain),
 * pg_stat_activity and pg_stat_statements.  With secretenv.redact_logs on,
 * redact_log.c and redact_stats.c keep the plaintext out of all of them.
 *
 * Redaction is decided by what a statement calls, never by the words of
 * its text (a comment or a column that merely mentions a name changes
 * nothing):
 *
 *	  - by its query tree, at parse analysis: a call of a function that
 *		takes or returns a plaintext, or a read of a view that returns one
 *		(redact_catalog.c derives them from the catalog), or of a name
 *		listed in secretenv.redact_names;
 *	  - at run time: every C function of secretenv that takes a plaintext
 *		calls se_redact_note_plaintext(), and every one that returns one
 *		se_redact_note_yield(), whoever called it (an application's
 *		wrapper, a trigger, a parallel worker);
 *	  - before analysis, for what is logged or fails first (log_statement's
 *		line, a statement the parser rejects or that runs in an aborted
 *		transaction): by the calls its text makes, at token level
 *		(redact_scrub.c), including a SQL-level EXECUTE of a prepared
 *		statement whose text makes one.
 *
 * A statement that takes a plaintext has its texts scrubbed (only the
 * plaintext arguments when they can be located, every value otherwise); in
 * a statement that takes or returns one, every record not raised by
 * secretenv itself has its message, detail, hint and context replaced, so
 * a cast, a constraint or a trigger that quotes the decrypted value prints
 * nothing of it.  The transaction is marked too: an error at COMMIT (a
 * deferred constraint) is redacted the same way.
 *
 * "The statement" is the client message being processed: PostgreSQL sets
 * the statement start timestamp once per simple Query or extended-protocol
 * message and keeps it for everything nested inside (and hands it to
 * parallel workers), so a mark is the timestamp of the message it was
 * made in.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "redaction/redact.h"
#include "se_messages.h"

static bool redact_logs = true;
/*
 * What the client's text of the current message calls (SE_CALLS_*):
 * decided once per message (a message of many statements is asked once
 * per statement and per log record), forgotten with MessageContext.
 */
typedef struct MessageDecision
{
	const char *text;
	int			verdict;
	MemoryContextCallback callback;
} MessageDecision;

static MessageDecision *message_decision = NULL;

/* Statement start timestamps of the messages that took / yielded a plaintext. */
static bool plaintext_seen = false;
static TimestampTz plaintext_seen_at = 0;
static bool yield_seen = false;
static TimestampTz yield_seen_at = 0;

/* The current transaction has taken or yielded a plaintext. */
static bool xact_marked = false;

/*
 * What runs when the current message first passes a plaintext, redaction
 * on: redact_stats.c scrubs the texts it handed on.  The part sets it at
 * its init, so that this file, which the parts call, calls none of them.
 */
static se_redact_plaintext_callback plaintext_callback = NULL;

void
se_redact_on_plaintext(se_redact_plaintext_callback callback)
{
	plaintext_callback = callback;
}

bool
se_redact_enabled(void)
{
	return redact_logs;
}

/* Whether the client message being processed has passed a plaintext. */
bool
se_redact_statement_flagged(void)
{
	return plaintext_seen &&
		plaintext_seen_at == GetCurrentStatementStartTimestamp();
}

/* Whether the client message being processed has taken or returned one. */
bool
se_redact_statement_yields(void)
{
	return se_redact_statement_flagged() ||
		(yield_seen && yield_seen_at == GetCurrentStatementStartTimestamp());
}

/* Whether the current transaction has taken or returned one. */
bool
se_redact_xact_marked(void)
{
	return xact_marked;
}

static void
forget_message_decision(void *arg)
{
	if (message_decision == (MessageDecision *) arg)
		message_decision = NULL;
}

/*
 * What the text sql, run as part of the current message, calls: see
 * SE_CALLS_*.  Never throws: the log hook asks too.
 */
int
se_redact_text_verdict(const char *sql)
{
	MessageDecision *decision;

	if (sql == NULL)
		return SE_CALLS_NONE;
	/* The log hook may run in a critical section, where nothing allocates. */
	if (sql != debug_query_string || MessageContext == NULL || CritSectionCount > 0)
		return se_redact_scan_calls((char *) sql, strlen(sql), false, NULL);

	if (message_decision != NULL && message_decision->text == sql)
		return message_decision->verdict;
	decision = MemoryContextAllocExtended(MessageContext, sizeof(MessageDecision),
										  MCXT_ALLOC_NO_OOM);
	if (decision == NULL)
		return se_redact_scan_calls((char *) sql, strlen(sql), false, NULL);
	/* Before the catalog is read the verdict fails closed: not kept. */
	if (!se_redact_catalog_read())
	{
		pfree(decision);
		return se_redact_scan_calls((char *) sql, strlen(sql), false, NULL);
	}
	decision->text = sql;
	decision->verdict = se_redact_scan_calls((char *) sql, strlen(sql), false, NULL);
	decision->callback.func = forget_message_decision;
	decision->callback.arg = decision;
	MemoryContextRegisterResetCallback(MessageContext, &decision->callback);
	message_decision = decision;
	return decision->verdict;
}

/*
 * Whether the text sql, run as part of the current message, must be kept
 * out of every channel: by the calls it makes, or because the message has
 * passed a plaintext already.  Never throws.
 */
bool
se_redact_carries_plaintext(const char *sql)
{
	return se_redact_statement_flagged() ||
		se_redact_text_verdict(sql) != SE_CALLS_NONE;
}

/*
 * Called by every function that takes a plaintext, before it looks at it,
 * and at parse analysis for a statement that calls one.  Cheap when the
 * message is marked already (a bulk INSERT calls it once per row).
 */
void
se_redact_note_plaintext(void)
{
	TimestampTz now = GetCurrentStatementStartTimestamp();

	xact_marked = true;
	if (plaintext_seen && plaintext_seen_at == now)
		return;
	plaintext_seen = true;
	plaintext_seen_at = now;
	if (redact_logs && plaintext_callback != NULL)
		plaintext_callback();
}

/*
 * Called by every function that returns a plaintext, before it returns
 * it, and at parse analysis for a statement that calls one: what the
 * statement does with the value later (a cast, a constraint) must not
 * print it.
 */
void
se_redact_note_yield(void)
{
	xact_marked = true;
	yield_seen = true;
	yield_seen_at = GetCurrentStatementStartTimestamp();
}

static void
redact_xact_callback(XactEvent event, void *arg)
{
	/* A client backend's first commit is its authentication's. */
	if (event == XACT_EVENT_PRE_COMMIT && redact_logs && MyBackendType == B_BACKEND)
		se_redact_catalog_load_at_commit();
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PREPARE || event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_PARALLEL_ABORT)
		xact_marked = false;
}

void
se_redact_init(void)
{
	DefineCustomBoolVariable("secretenv.redact_logs",
							 "Keeps statements that pass plaintext to secretenv out of the server log, pg_stat_activity and pg_stat_statements.",
							 "Statement text, bind parameters and STATEMENT lines of such statements are replaced by a marker; the texts kept by pg_stat_activity and pg_stat_statements have their values overwritten.",
							 &redact_logs,
							 true,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);

	RegisterXactCallback(redact_xact_callback, NULL);
}
