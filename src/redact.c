/*-------------------------------------------------------------------------
 *
 * redact.c
 *	  Which statements carry a plaintext: the settings and the decision.
 *
 * A plaintext reaches the server as SQL text or as a bind parameter, and
 * several channels keep statement text: the server log (core statement
 * logging, error STATEMENT/CONTEXT/DETAIL lines, pgaudit, auto_explain),
 * pg_stat_activity and pg_stat_statements.  With secretenv.redact_logs on,
 * redact_log.c and redact_stats.c keep the plaintext out of all of them for
 * every statement this file says carries one.  A statement carries one when
 *
 *	  - its text names a secretenv function that takes a plaintext
 *		(secret_create, secret_update, secret_encrypt, secret_mask), a
 *		passphrase setting, or a name listed in secretenv.redact_names (an
 *		application's function wrapping those, or the table whose trigger
 *		does), case-insensitively;
 *	  - it is a SQL-level EXECUTE of a prepared statement whose text does;
 *	  - or it has passed a plaintext to secretenv: the C functions that take
 *		one call se_redact_note_plaintext(), which marks the statement from
 *		then on, whatever its text says (a wrapper under another name).
 *
 * "The statement" is the client message being processed: PostgreSQL sets
 * the statement start timestamp once per simple Query or extended-protocol
 * message and keeps it for everything nested inside, so the mark is the
 * timestamp of the message that passed the plaintext.  Records emitted
 * after that message (the next statement's) are not marked; records of
 * the same message after the call (its errors, its duration line, plans
 * and audit lines logged at its end) are.
 *
 * The mark can only cover what happens after the plaintext reached
 * secretenv.  What PostgreSQL and pgaudit log before any function runs
 * (log_statement's line and its parameters, pgaudit's line of the
 * top-level statement) is recognised by name only, which is what
 * secretenv.redact_names is for: see the README's security model.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/prepare.h"
#include "miscadmin.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "pg_compat.h"
#include "redact.h"
#include "se_messages.h"

static bool redact_logs = true;
static char *redact_names_string = NULL;

/* The parsed secretenv.redact_names: NULL-terminated, lower case. */
static char **redact_names = NULL;

/*
 * Whether the client's text of the current message carries a plaintext by
 * its names: decided once per message (a message of many statements is
 * asked once per statement and per log record), forgotten with
 * MessageContext.
 */
typedef struct MessageDecision
{
	const char *text;
	bool		carries;
	MemoryContextCallback callback;
} MessageDecision;

static MessageDecision *message_decision = NULL;

/* Statement start timestamp of the message that passed a plaintext. */
static bool plaintext_seen = false;
static TimestampTz plaintext_seen_at = 0;

/*
 * Names whose presence marks a statement as carrying a plaintext.  Each
 * starts with one of the two stems below, which the scan looks for first:
 * the check runs for every statement, and must cost next to nothing.
 */
static const char *const plaintext_markers[] = {
	"secret_create",
	"secret_update",
	"secret_encrypt",
	"secret_mask",
	"kek_passphrase",
	"kek_previous_passphrase",
	NULL
};

bool
se_redact_enabled(void)
{
	return redact_logs;
}

static bool
contains_ci(const char *haystack, const char *needle)
{
	size_t		n = strlen(needle);
	char		first = pg_tolower((unsigned char) needle[0]);

	for (const char *p = haystack; *p; p++)
		if (pg_tolower((unsigned char) *p) == first &&
			pg_strncasecmp(p, needle, n) == 0)
			return true;
	return false;
}

static bool
marker_at(const char *p)
{
	for (int i = 0; plaintext_markers[i] != NULL; i++)
		if (pg_strncasecmp(p, plaintext_markers[i], strlen(plaintext_markers[i])) == 0)
			return true;
	return false;
}

bool
se_redact_mentions_plaintext(const char *s)
{
	if (s == NULL)
		return false;
	for (const char *p = s; *p; p++)
	{
		char		c = *p | 0x20;	/* ASCII letters to lower case */

		if ((c == 's' && pg_strncasecmp(p, "secret_", 7) == 0 && marker_at(p)) ||
			(c == 'k' && pg_strncasecmp(p, "kek_", 4) == 0 && marker_at(p)))
			return true;
	}
	for (int i = 0; redact_names != NULL && redact_names[i] != NULL; i++)
		if (contains_ci(s, redact_names[i]))
			return true;
	return false;
}

/*
 * Whether sql runs, through a SQL-level EXECUTE, a prepared statement of
 * this session whose text names a plaintext function: "EXECUTE p('x')"
 * itself names none.  Only looks names up; never throws.
 */
static bool
executes_plaintext_statement(const char *sql)
{
	for (const char *p = sql; p != NULL && *p; p++)
	{
		char		name[NAMEDATALEN];
		int			len = 0;
		PreparedStatement *prepared;

		if ((*p | 0x20) != 'e' || pg_strncasecmp(p, "execute", 7) != 0 ||
			!isspace((unsigned char) p[7]))
			continue;
		p += 7;
		while (isspace((unsigned char) *p))
			p++;
		if (*p == '"')
		{
			for (p++; *p && len < NAMEDATALEN - 1; p++)
			{
				if (p[0] == '"' && p[1] != '"')
					break;
				if (p[0] == '"')
					p++;
				name[len++] = *p;
			}
		}
		else
			while ((isalnum((unsigned char) *p) || *p == '_' || *p == '$') &&
				   len < NAMEDATALEN - 1)
				name[len++] = pg_tolower((unsigned char) *p++);
		name[len] = '\0';
		if (len == 0)
			continue;
		prepared = FetchPreparedStatement(name, false);
		if (prepared != NULL &&
			se_redact_mentions_plaintext(prepared->plansource->query_string))
			return true;
		if (*p == '\0')
			break;
	}
	return false;
}

/* Whether the client message being processed has passed a plaintext. */
bool
se_redact_statement_flagged(void)
{
	return plaintext_seen &&
		plaintext_seen_at == GetCurrentStatementStartTimestamp();
}

static bool
text_carries_plaintext(const char *sql)
{
	return se_redact_mentions_plaintext(sql) || executes_plaintext_statement(sql);
}

static void
forget_message_decision(void *arg)
{
	if (message_decision == (MessageDecision *) arg)
		message_decision = NULL;
}

/*
 * Whether the text sql, run as part of the current message, must be kept
 * out of every channel: by its names, or because the message has passed
 * a plaintext already.  Never throws: the log hook asks too.
 */
bool
se_redact_carries_plaintext(const char *sql)
{
	MessageDecision *decision;

	if (se_redact_statement_flagged())
		return true;
	if (sql == NULL)
		return false;
	/* The log hook may run in a critical section, where nothing allocates. */
	if (sql != debug_query_string || MessageContext == NULL || CritSectionCount > 0)
		return text_carries_plaintext(sql);

	if (message_decision != NULL && message_decision->text == sql)
		return message_decision->carries;
	decision = MemoryContextAllocExtended(MessageContext, sizeof(MessageDecision),
										  MCXT_ALLOC_NO_OOM);
	if (decision == NULL)
		return text_carries_plaintext(sql);
	decision->text = sql;
	decision->carries = text_carries_plaintext(sql);
	decision->callback.func = forget_message_decision;
	decision->callback.arg = decision;
	MemoryContextRegisterResetCallback(MessageContext, &decision->callback);
	message_decision = decision;
	return decision->carries;
}

/*
 * Called by every SQL-callable function that takes a plaintext, before it
 * looks at it.  Cheap when the message is marked already (a bulk INSERT
 * calls it once per row).
 */
void
se_redact_note_plaintext(void)
{
	TimestampTz now = GetCurrentStatementStartTimestamp();

	if (plaintext_seen && plaintext_seen_at == now)
		return;
	plaintext_seen = true;
	plaintext_seen_at = now;
	if (redact_logs)
		se_redact_stats_plaintext_seen();
}

/*
 * secretenv.redact_names: a comma-separated list of names (of functions,
 * tables, views), each made of identifier characters.  Parsed here,
 * installed by the assign hook, as GUC check hooks must not throw.
 */
static bool
check_redact_names(char **newval, void **extra, GucSource source)
{
	const char *raw = *newval;
	int			count = 1;
	char	  **names;
	char	   *strings;
	int			n = 0;

	for (const char *p = raw; *p; p++)
		if (*p == ',')
			count++;
	/* One block: the pointer array, then the strings; freed by guc.c. */
	names = guc_malloc_compat(sizeof(char *) * (count + 1) + strlen(raw) + 1);
	if (names == NULL)
	{
		GUC_check_errcode(ERRCODE_OUT_OF_MEMORY);
		GUC_check_errmsg("out of memory");
		return false;
	}
	strings = (char *) (names + count + 1);
	strcpy(strings, raw);

	for (char *item = strings; item != NULL;)
	{
		char	   *comma = strchr(item, ',');
		char	   *end;

		if (comma)
			*comma = '\0';
		while (isspace((unsigned char) *item))
			item++;
		end = item + strlen(item);
		while (end > item && isspace((unsigned char) end[-1]))
			*--end = '\0';
		if (*item == '\0')
		{
			if (comma != NULL || n > 0)
			{
				GUC_check_errdetail("The list contains an empty name.");
				guc_free_compat(names);
				return false;
			}
		}
		else
		{
			for (char *c = item; *c; c++)
			{
				if (!(isalnum((unsigned char) *c) || *c == '_' || *c == '$'))
				{
					GUC_check_errdetail("Names may contain only letters, digits, \"_\" and \"$\"; give them without schema or quotes.");
					guc_free_compat(names);
					return false;
				}
				*c = pg_tolower((unsigned char) *c);
			}
			if (end - item >= NAMEDATALEN)
			{
				GUC_check_errdetail("A name is longer than %d bytes.", NAMEDATALEN - 1);
				guc_free_compat(names);
				return false;
			}
			names[n++] = item;
		}
		item = comma ? comma + 1 : NULL;
	}
	names[n] = NULL;
	*extra = names;
	return true;
}

static void
assign_redact_names(const char *newval, void *extra)
{
	redact_names = (char **) extra;
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
	DefineCustomStringVariable("secretenv.redact_names",
							   "Further names whose presence marks a statement as carrying a plaintext.",
							   "Comma-separated names without schema: application functions that wrap secret_create and the like, tables whose triggers call them.",
							   &redact_names_string,
							   "",
							   PGC_SUSET,
							   GUC_LIST_INPUT,
							   check_redact_names, assign_redact_names, NULL);

	se_redact_log_init();
	se_redact_stats_init();
	if (process_shared_preload_libraries_in_progress)
		se_redact_check_preload_order();
}
