/*-------------------------------------------------------------------------
 *
 * redact_stats.c
 *	  Keep plaintexts out of pg_stat_activity and pg_stat_statements.
 *
 * pg_stat_activity.query is this backend's copy of the client's statement,
 * written before the statement is even parsed and kept while the session
 * sits idle.  pg_stat_statements stores statement texts from its own
 * hooks: after parse analysis (normalised, constants as $n, for plannable
 * statements), at ExecutorEnd, and after a utility statement ran (DO,
 * CREATE TABLE AS, COPY, EXPLAIN: stored verbatim).
 *
 * For a statement that carries a plaintext (redact.c), secretenv's hooks
 * hand everything after them a scrubbed copy of the text (redact_scrub.c:
 * same length, same token boundaries, values overwritten):
 *
 *	  - post_parse_analyze_hook: ParseState.p_sourcetext, for the normalised
 *		entry; for a utility statement also the query id, which PostgreSQL
 *		computes as a hash of its text and which would otherwise let a
 *		short plaintext be guessed from pg_stat_statements.queryid;
 *	  - ExecutorStart and ExecutorEnd hooks: QueryDesc.sourceText, read by
 *		pg_stat_statements and auto_explain at ExecutorEnd and by pgaudit at
 *		ExecutorStart (it is also what parallel workers show);
 *	  - ProcessUtility_hook: the query string.  Every utility statement gets
 *		a private copy, kept in a list while it runs: if the statement
 *		passes a plaintext only while running (a DO block calling a wrapper)
 *		that copy is scrubbed in place before pg_stat_statements stores it
 *		at the end.  A memory context callback unlinks the copy when its
 *		memory goes, so an error unwinding past the hook leaves nothing
 *		dangling.
 *
 * These hooks only see what runs inside them, so secretenv must be loaded
 * after pg_stat_statements (its hooks are then installed later and run
 * first): se_redact_check_preload_order() warns at start when it is not.
 *
 * The backend's pg_stat_activity entry is overwritten with the scrubbed
 * text as soon as the statement is known to carry a plaintext: after parse
 * analysis when its text says so, at ExecutorStart (the extended protocol
 * reports the text only when executing), or when it passes the plaintext.
 * The entry keeps that text while the session is idle.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "executor/executor.h"
#include "lib/ilist.h"
#include "miscadmin.h"
#include "parser/analyze.h"
#include "tcop/tcopprot.h"
#include "tcop/utility.h"
#include "utils/backend_status.h"
#include "utils/memutils.h"
#include "utils/queryjumble.h"
#include "utils/varlena.h"

#include "redact.h"

static post_parse_analyze_hook_type prev_post_parse_analyze_hook = NULL;
static ExecutorStart_hook_type prev_ExecutorStart_hook = NULL;
static ExecutorEnd_hook_type prev_ExecutorEnd_hook = NULL;
static ProcessUtility_hook_type prev_ProcessUtility_hook = NULL;

/* A utility statement's text handed down while the statement runs. */
typedef struct LiveText
{
	dlist_node	node;
	char	   *text;
	size_t		len;
	bool		linked;
	MemoryContextCallback callback;
} LiveText;

static dlist_head live_texts = DLIST_STATIC_INIT(live_texts);

/*
 * The entry's change count and the text when the entry was last looked
 * at: every write to the entry (pgstat_report_activity reporting a new
 * text among them) bumps the count, so a text reported since is never
 * missed, and a statement's nested statements cost a comparison.
 */
static int	activity_checked_count = -1;
static const char *activity_checked_text = NULL;

/*
 * Overwrite this backend's pg_stat_activity text with the scrubbed text of
 * the current top-level statement.  Written the way pgstat_report_activity
 * writes it, but leaving state, timestamps and query id alone.
 */
static void
scrub_activity(void)
{
	volatile PgBackendStatus *beentry = MyBEEntry;
	char	   *scrubbed;
	size_t		len;

	if (beentry == NULL || !pgstat_track_activities || debug_query_string == NULL)
		return;
	/* Only a running statement's text is ours to replace (not a Parse's). */
	if (beentry->st_state != STATE_RUNNING)
		return;

	scrubbed = se_redact_scrubbed_copy(debug_query_string);
	len = Min(strlen(scrubbed), pgstat_track_activity_query_size - 1);

	PGSTAT_BEGIN_WRITE_ACTIVITY(beentry);
	memcpy((char *) beentry->st_activity_raw, scrubbed, len);
	beentry->st_activity_raw[len] = '\0';
	PGSTAT_END_WRITE_ACTIVITY(beentry);

	pfree(scrubbed);
	activity_checked_count = beentry->st_changecount;
	activity_checked_text = debug_query_string;
}

/*
 * Scrub the entry if the current top-level statement's text carries a
 * plaintext; decided again only when the entry or the text changed (the
 * decision itself changes only when the message passes a plaintext, which
 * scrubs by itself).
 */
static void
scrub_activity_if_needed(void)
{
	volatile PgBackendStatus *beentry = MyBEEntry;

	if (beentry == NULL || debug_query_string == NULL ||
		(activity_checked_count == beentry->st_changecount &&
		 activity_checked_text == debug_query_string))
		return;
	activity_checked_count = beentry->st_changecount;
	activity_checked_text = debug_query_string;
	if (se_redact_carries_plaintext(debug_query_string))
		scrub_activity();
}

/*
 * The current message has just passed a plaintext: scrub the texts still
 * handed down and the pg_stat_activity entry.
 */
void
se_redact_stats_plaintext_seen(void)
{
	dlist_iter	iter;

	dlist_foreach(iter, &live_texts)
	{
		LiveText   *live = dlist_container(LiveText, node, iter.cur);

		se_redact_scrub_in_place(live->text, live->len);
	}
	scrub_activity();
}

static void
redact_post_parse_analyze(ParseState *pstate, Query *query, JumbleState *jstate)
{
	const char *original = pstate->p_sourcetext;

	if (se_redact_enabled() && original != NULL &&
		se_redact_carries_plaintext(original))
	{
		char	   *scrubbed = se_redact_scrubbed_copy(original);

		/* As PostgreSQL computes it, over the scrubbed text. */
		if (query->utilityStmt != NULL && query->queryId != UINT64CONST(0))
		{
			int			location = query->stmt_location;
			int			len = query->stmt_len;
			const char *stmt = CleanQuerytext(scrubbed, &location, &len);

			query->queryId = DatumGetUInt64(hash_any_extended((const unsigned char *) stmt,
															  len, 0));
			if (query->queryId == UINT64CONST(0))
				query->queryId = UINT64CONST(1);
		}
		pstate->p_sourcetext = scrubbed;
	}
	if (se_redact_enabled())
		scrub_activity_if_needed();

	if (prev_post_parse_analyze_hook)
		prev_post_parse_analyze_hook(pstate, query, jstate);
	pstate->p_sourcetext = original;
}

/* Give queryDesc a scrubbed text that lives as long as it does. */
static void
scrub_query_desc(QueryDesc *queryDesc)
{
	if (se_redact_enabled() && queryDesc->sourceText != NULL &&
		se_redact_carries_plaintext(queryDesc->sourceText))
	{
		MemoryContext old = MemoryContextSwitchTo(GetMemoryChunkContext(queryDesc));

		queryDesc->sourceText = se_redact_scrubbed_copy(queryDesc->sourceText);
		MemoryContextSwitchTo(old);
	}
}

static void
redact_ExecutorStart(QueryDesc *queryDesc, int eflags)
{
	scrub_query_desc(queryDesc);
	if (se_redact_enabled())
		scrub_activity_if_needed();

	if (prev_ExecutorStart_hook)
		prev_ExecutorStart_hook(queryDesc, eflags);
	else
		standard_ExecutorStart(queryDesc, eflags);
}

static void
redact_ExecutorEnd(QueryDesc *queryDesc)
{
	/*
	 * A text that names a plaintext function was scrubbed at ExecutorStart;
	 * this is for the statement that has passed one since it started.
	 */
	if (se_redact_statement_flagged())
		scrub_query_desc(queryDesc);

	if (prev_ExecutorEnd_hook)
		prev_ExecutorEnd_hook(queryDesc);
	else
		standard_ExecutorEnd(queryDesc);
}

static void
forget_live_text(void *arg)
{
	LiveText   *live = (LiveText *) arg;

	if (live->linked)
	{
		dlist_delete(&live->node);
		live->linked = false;
	}
}

static void
redact_ProcessUtility(PlannedStmt *pstmt, const char *queryString,
					  bool readOnlyTree, ProcessUtilityContext context,
					  ParamListInfo params, QueryEnvironment *queryEnv,
					  DestReceiver *dest, QueryCompletion *qc)
{
	LiveText   *live = NULL;

	if (se_redact_enabled() && queryString != NULL)
	{
		live = palloc(sizeof(LiveText));
		live->len = strlen(queryString);
		live->text = palloc(live->len + 1);
		memcpy(live->text, queryString, live->len + 1);
		if (se_redact_carries_plaintext(queryString))
			se_redact_scrub_in_place(live->text, live->len);
		live->linked = true;
		dlist_push_head(&live_texts, &live->node);
		live->callback.func = forget_live_text;
		live->callback.arg = live;
		MemoryContextRegisterResetCallback(CurrentMemoryContext, &live->callback);
		queryString = live->text;
		scrub_activity_if_needed();
	}

	if (prev_ProcessUtility_hook)
		prev_ProcessUtility_hook(pstmt, queryString, readOnlyTree, context,
								 params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);

	if (live != NULL)
		forget_live_text(live);
}

/*
 * Warn, in the postmaster at start, when pg_stat_statements is listed
 * after secretenv in shared_preload_libraries: its hooks then run around
 * secretenv's and store statement texts secretenv has not scrubbed.
 * pgaudit and auto_explain may come in any order: their output goes
 * through the log hook.
 */
void
se_redact_check_preload_order(void)
{
	char	   *raw = pstrdup(shared_preload_libraries_string);
	List	   *libraries;
	ListCell   *lc;
	bool		seen_secretenv = false;

	if (!SplitDirectoriesString(raw, ',', &libraries))
		return;
	foreach(lc, libraries)
	{
		const char *path = (const char *) lfirst(lc);
		const char *base = strrchr(path, '/');
		size_t		len;

		base = base ? base + 1 : path;
		len = strlen(base);
		if (len > strlen(DLSUFFIX) &&
			strcmp(base + len - strlen(DLSUFFIX), DLSUFFIX) == 0)
			len -= strlen(DLSUFFIX);

		if (len == strlen("secretenv") && strncmp(base, "secretenv", len) == 0)
			seen_secretenv = true;
		else if (seen_secretenv && len == strlen("pg_stat_statements") &&
				 strncmp(base, "pg_stat_statements", len) == 0)
			ereport(WARNING,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("pg_stat_statements is loaded after secretenv"),
					 errdetail("pg_stat_statements will store the text of statements that pass a plaintext to secretenv before secretenv can scrub it."),
					 errhint("List secretenv last in shared_preload_libraries, for example \"pg_stat_statements, pgaudit, auto_explain, secretenv\".")));
	}
}

void
se_redact_stats_init(void)
{
	prev_post_parse_analyze_hook = post_parse_analyze_hook;
	post_parse_analyze_hook = redact_post_parse_analyze;
	prev_ExecutorStart_hook = ExecutorStart_hook;
	ExecutorStart_hook = redact_ExecutorStart;
	prev_ExecutorEnd_hook = ExecutorEnd_hook;
	ExecutorEnd_hook = redact_ExecutorEnd;
	prev_ProcessUtility_hook = ProcessUtility_hook;
	ProcessUtility_hook = redact_ProcessUtility;
}
