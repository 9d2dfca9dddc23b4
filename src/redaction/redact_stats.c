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
 * same length, same token boundaries, the plaintext arguments overwritten,
 * or every value where they cannot be located; pg_stat_activity always
 * gets every value overwritten).  At parse analysis they also mark the
 * statement by the calls its query tree makes (redact_catalog.c):
 *
 *	  - post_parse_analyze_hook: ParseState.p_sourcetext, for the normalised
 *		entry; for a utility statement also the query id, which PostgreSQL
 *		computes as a hash of its text and which would otherwise let a
 *		short plaintext be guessed from pg_stat_statements.queryid;
 *	  - planner_hook: the query string, which pg_stat_statements stores when
 *		it tracks planning and has no entry for the statement yet;
 *	  - ExecutorStart and ExecutorEnd hooks: QueryDesc.sourceText, read by
 *		pg_stat_statements and auto_explain at ExecutorEnd and by pgaudit at
 *		ExecutorStart (it is also what parallel workers show);
 *	  - ProcessUtility_hook: the query string.  A top-level utility statement
 *		gets the message's private copy of the client's text, one per
 *		message, in MessageContext: if the statement passes a plaintext only
 *		while running (a DO block calling a wrapper), that copy is scrubbed
 *		in place before pg_stat_statements stores it at the end.  A reset
 *		callback on MessageContext forgets the copy with the message, so an
 *		error unwinding past the hook leaves nothing dangling.  A nested
 *		utility statement (dynamic SQL in a function) gets a scrubbed copy
 *		when its text carries a plaintext, and its own text otherwise.
 *
 * Extension scripts are left alone: every statement of a script is parsed
 * and run with the whole script as its text, which scanning and copying
 * per statement would make quadratic, and a script carries no plaintext of
 * the user's.
 *
 * These hooks only see what runs inside them, so secretenv must be loaded
 * after pg_stat_statements (its hooks are then installed later and run
 * first): check_preload_order() warns at start when it is not.
 *
 * The backend's pg_stat_activity entry is overwritten with the scrubbed
 * text as soon as the statement is known to carry a plaintext: after parse
 * analysis when its text says so, when the executor starts or runs (the
 * extended protocol reports the text only at Execute, after the executor
 * started at Bind), or when it passes the plaintext.
 * The entry keeps that text while the session is idle.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "executor/executor.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "optimizer/planner.h"
#include "parser/analyze.h"
#include "tcop/tcopprot.h"
#include "utils/backend_status.h"
#include "utils/memutils.h"
#include "utils/varlena.h"

#include "pg_compat.h"
#include "redaction/redact.h"
#include "se_messages.h"
#include "utility_hook_chain.h"

static post_parse_analyze_hook_type prev_post_parse_analyze_hook = NULL;
static planner_hook_type prev_planner_hook = NULL;
static ExecutorStart_hook_type prev_ExecutorStart_hook = NULL;
static ExecutorRun_hook_type prev_ExecutorRun_hook = NULL;
static ExecutorEnd_hook_type prev_ExecutorEnd_hook = NULL;
static ProcessUtility_hook_type prev_ProcessUtility_hook = NULL;

/*
 * The current message's copy of the client's text handed to top-level
 * utility statements; lives in MessageContext, forgotten when it is reset.
 */
typedef struct MessageText
{
	const char *source;
	char	   *copy;
	size_t		len;
	bool		scrubbed;
	MemoryContextCallback callback;
} MessageText;

static MessageText *message_text = NULL;

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
void
se_redact_stats_scrub_activity(void)
{
	volatile PgBackendStatus *beentry = MyBEEntry;
	char	   *scrubbed;
	size_t		len;

	if (beentry == NULL || !pgstat_track_activities || debug_query_string == NULL)
		return;
	/* Only a running statement's text is ours to replace (not a Parse's). */
	if (beentry->st_state != STATE_RUNNING)
		return;

	/*
	 * Only the part that fits is kept, so only that part is scrubbed: a
	 * constant cut at the end reads as unterminated and is overwritten.
	 */
	len = strnlen(debug_query_string, pgstat_track_activity_query_size - 1);
	scrubbed = pnstrdup(debug_query_string, len);
	se_redact_scrub_in_place(scrubbed, len);

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
		se_redact_stats_scrub_activity();
}

/* Redaction applies, and this is not an extension script. */
static inline bool
redacting(void)
{
	return se_redact_enabled() && !creating_extension;
}

/*
 * The current message has just passed a plaintext: scrub the text handed
 * to its utility statements and the pg_stat_activity entry.
 */
static void
scrub_on_plaintext(void)
{
	if (message_text != NULL && !message_text->scrubbed)
	{
		se_redact_scrub_statement(message_text->copy, message_text->len);
		message_text->scrubbed = true;
	}
	se_redact_stats_scrub_activity();
}

static void
forget_message_text(void *arg)
{
	if (message_text == (MessageText *) arg)
		message_text = NULL;
}

/*
 * The current message's copy of the client's text, made once per message;
 * NULL when text is not the client's text of a message.
 */
static MessageText *
message_copy(const char *text)
{
	MessageText *copy;

	if (text != debug_query_string || MessageContext == NULL)
		return NULL;
	if (message_text != NULL && message_text->source == text)
		return message_text;

	copy = MemoryContextAlloc(MessageContext, sizeof(MessageText));
	copy->source = text;
	copy->len = strlen(text);
	copy->copy = MemoryContextAlloc(MessageContext, copy->len + 1);
	memcpy(copy->copy, text, copy->len + 1);
	copy->scrubbed = false;
	copy->callback.func = forget_message_text;
	copy->callback.arg = copy;
	MemoryContextRegisterResetCallback(MessageContext, &copy->callback);
	message_text = copy;
	return copy;
}

/*
 * A scrubbed text of text, for the duration of a hook call: the message's
 * copy for the client's text (a message of many statements is copied and
 * scrubbed once), a new copy otherwise.
 */
static const char *
scrubbed_text(const char *text)
{
	MessageText *copy = message_copy(text);

	if (copy == NULL)
	{
		char	   *scrubbed = pstrdup(text);

		se_redact_scrub_statement(scrubbed, strlen(scrubbed));
		return scrubbed;
	}
	if (!copy->scrubbed)
	{
		se_redact_scrub_statement(copy->copy, copy->len);
		copy->scrubbed = true;
	}
	return copy->copy;
}

/*
 * The text to hand to the next ProcessUtility hook.  A top-level statement
 * gets the message's copy of the client's text, scrubbed if it carries a
 * plaintext, and scrubbed in place later if it passes one while running;
 * a nested statement gets a scrubbed copy if it carries one, its own text
 * otherwise.
 */
static const char *
utility_text(const char *queryString, ProcessUtilityContext context)
{
	MessageText *copy;

	if (se_redact_carries_plaintext(queryString))
		return scrubbed_text(queryString);
	if (context == PROCESS_UTILITY_TOPLEVEL &&
		(copy = message_copy(queryString)) != NULL)
		return copy->copy;
	return queryString;
}

static void
redact_post_parse_analyze(POST_PARSE_ANALYZE_PARAMS_COMPAT)
{
	const char *original = pstate->p_sourcetext;

	/* Mark the statement by what its query tree calls. */
	if (redacting())
	{
		bool		takes;
		bool		yields;

		se_redact_catalog_load();
		se_redact_query_calls(query, &takes, &yields);
		if (takes)
			se_redact_note_plaintext();
		if (yields)
			se_redact_note_yield();
	}
	if (redacting() && original != NULL &&
		se_redact_carries_plaintext(original))
	{
		const char *scrubbed = scrubbed_text(original);

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
	if (redacting())
		scrub_activity_if_needed();

	if (prev_post_parse_analyze_hook)
		prev_post_parse_analyze_hook(POST_PARSE_ANALYZE_ARGS_COMPAT);
	pstate->p_sourcetext = original;
}

static PlannedStmt *
redact_planner(PLANNER_PARAMS_COMPAT)
{
	if (redacting() && query_string != NULL &&
		se_redact_carries_plaintext(query_string))
		query_string = scrubbed_text(query_string);

	if (prev_planner_hook)
		return prev_planner_hook(PLANNER_ARGS_COMPAT);
	return standard_planner(PLANNER_ARGS_COMPAT);
}

/*
 * Give queryDesc a scrubbed text that lives as long as it does.  Only its
 * own statement is copied and scrubbed, at its own offset, with spaces
 * before it: the statement location stays valid for pg_stat_statements,
 * and a message of many statements is not copied whole for each.
 */
static void
scrub_query_desc(QueryDesc *queryDesc)
{
	const char *source = queryDesc->sourceText;
	PlannedStmt *stmt = queryDesc->plannedstmt;
	size_t		start = 0;
	size_t		end;
	char	   *copy;

	if (!redacting() || source == NULL || !se_redact_carries_plaintext(source))
		return;

	end = strlen(source);
	if (stmt != NULL && stmt->stmt_location >= 0 && stmt->stmt_location <= end)
	{
		start = stmt->stmt_location;
		if (stmt->stmt_len > 0 && start + stmt->stmt_len <= end)
			end = start + stmt->stmt_len;
	}
	copy = MemoryContextAlloc(GetMemoryChunkContext(queryDesc), end + 1);
	memset(copy, ' ', start);
	memcpy(copy + start, source + start, end - start);
	copy[end] = '\0';
	se_redact_scrub_statement(copy + start, end - start);
	queryDesc->sourceText = copy;
}

static void
redact_ExecutorStart(QueryDesc *queryDesc, int eflags)
{
	if (redacting())
		se_redact_catalog_load();
	scrub_query_desc(queryDesc);
	if (redacting())
		scrub_activity_if_needed();

	if (prev_ExecutorStart_hook)
		prev_ExecutorStart_hook(queryDesc, eflags);
	else
		standard_ExecutorStart(queryDesc, eflags);
}

/*
 * The extended protocol starts the executor at Bind and reports the text
 * only at Execute, which runs it: the entry is checked again here.
 */
static void
redact_ExecutorRun(EXECUTOR_RUN_PARAMS_COMPAT)
{
	/*
	 * Without preload the library, and these hooks, arrive while the
	 * executor starts the statement's first call of secretenv: the catalog
	 * is read here, or the text would fail closed, names included.
	 */
	if (redacting())
	{
		se_redact_catalog_load();
		scrub_activity_if_needed();
	}

	if (prev_ExecutorRun_hook)
		prev_ExecutorRun_hook(EXECUTOR_RUN_ARGS_COMPAT);
	else
		standard_ExecutorRun(EXECUTOR_RUN_ARGS_COMPAT);
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
redact_ProcessUtility(PlannedStmt *pstmt, const char *queryString,
					  bool readOnlyTree, ProcessUtilityContext context,
					  ParamListInfo params, QueryEnvironment *queryEnv,
					  DestReceiver *dest, QueryCompletion *qc)
{
	if (redacting() && queryString != NULL)
	{
		se_redact_catalog_load();
		queryString = utility_text(queryString, context);
		scrub_activity_if_needed();
	}

	se_next_process_utility(prev_ProcessUtility_hook, pstmt, queryString, readOnlyTree,
							context, params, queryEnv, dest, qc);
}

/*
 * Warn, in the postmaster at start, when pg_stat_statements is listed
 * after secretenv in shared_preload_libraries: its hooks then run around
 * secretenv's and store statement texts secretenv has not scrubbed.
 * pgaudit and auto_explain may come in any order: their output goes
 * through the log hook.
 */
static void
check_preload_order(void)
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
	prev_planner_hook = planner_hook;
	planner_hook = redact_planner;
	prev_ExecutorStart_hook = ExecutorStart_hook;
	ExecutorStart_hook = redact_ExecutorStart;
	prev_ExecutorRun_hook = ExecutorRun_hook;
	ExecutorRun_hook = redact_ExecutorRun;
	prev_ExecutorEnd_hook = ExecutorEnd_hook;
	ExecutorEnd_hook = redact_ExecutorEnd;
	prev_ProcessUtility_hook = ProcessUtility_hook;
	ProcessUtility_hook = redact_ProcessUtility;
	se_redact_on_plaintext(scrub_on_plaintext);
	if (process_shared_preload_libraries_in_progress)
		check_preload_order();
}
