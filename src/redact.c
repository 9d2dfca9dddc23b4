/*-------------------------------------------------------------------------
 *
 * redact.c
 *	  Keep plaintext and passphrases out of the server log.
 *
 * A plaintext reaches the server as SQL text or as a bind parameter, and
 * PostgreSQL logs both: log_statement, log_min_duration_statement, the
 * STATEMENT line of an error (log_min_error_statement) and the
 * "parameters: $1 = ..." DETAIL of the extended protocol.  This
 * emit_log_hook rewrites those records when the statement they belong to
 * names a secretenv function that takes a plaintext (secret_create,
 * secret_update, secret_encrypt, secret_mask) or a passphrase setting:
 *
 *	  - a statement-logging record keeps its prefix ("statement", "execute
 *		<name>", "duration: ... ms") and loses the SQL text;
 *	  - its DETAIL (bind parameters, or the PREPARE text of an EXECUTE) and
 *		any CONTEXT are replaced by the marker;
 *	  - the STATEMENT line of any record is suppressed;
 *	  - every record of such a statement loses its CONTEXT, which may quote
 *		the SQL or the bind parameters (log_parameter_max_length_on_error);
 *	  - errors raised inside it by other code (a jsonb parser quoting its
 *		input) lose their DETAIL; secretenv's own errors, which never carry
 *		secret material, keep theirs.
 *
 * A record that quotes the value of a passphrase setting (the postmaster's
 * 'parameter ... changed to ...' on reload, a rejected value) keeps the
 * setting's name and loses the value.  Everything else in the log is
 * untouched.  The statement is recognised by
 * name in its text (case-insensitively), so a user function wrapping
 * secret_create under another name is not recognised: see the README.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "commands/prepare.h"
#include "miscadmin.h"
#include "tcop/tcopprot.h"
#include "utils/elog.h"
#include "utils/guc.h"

#include "secretenv.h"

#define REDACTED_MARKER "[secretenv: redacted]"

static bool redact_logs = true;
static emit_log_hook_type prev_emit_log_hook = NULL;

/* Names whose presence marks a statement as carrying a plaintext. */
static const char *const plaintext_markers[] = {
	"secret_create",
	"secret_update",
	"secret_encrypt",
	"secret_mask",
	"kek_passphrase",
	"kek_previous_passphrase",
	NULL
};

/* Settings whose values must never be logged. */
static const char *const secret_settings[] = {
	"secretenv.kek_passphrase",
	"secretenv.kek_previous_passphrase",
	"secretenv.kek_passphrase_command",
	NULL
};

static bool
contains_ci(const char *haystack, const char *needle)
{
	size_t		n = strlen(needle);

	for (const char *p = haystack; *p; p++)
		if (pg_strncasecmp(p, needle, n) == 0)
			return true;
	return false;
}

static bool
mentions_plaintext(const char *s)
{
	if (s == NULL)
		return false;
	for (int i = 0; plaintext_markers[i] != NULL; i++)
		if (contains_ci(s, plaintext_markers[i]))
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

		if (pg_strncasecmp(p, "execute", 7) != 0 || !isspace((unsigned char) p[7]))
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
		if (prepared != NULL && mentions_plaintext(prepared->plansource->query_string))
			return true;
		if (*p == '\0')
			break;
	}
	return false;
}

/*
 * The part of a statement-logging message to keep: "statement: ",
 * "execute <name>: ", "duration: 1.234 ms  statement: " and the like,
 * i.e. everything up to the last ": " before the SQL text.  NULL if the
 * message is not one of PostgreSQL's statement-logging messages.
 */
static char *
statement_log_prefix(const char *message)
{
	static const char *const named_kinds[] = {"execute ", "parse ", "bind ", NULL};
	const char *text_start = NULL;

	if (strncmp(message, "statement: ", 11) == 0)
		text_start = message + 11;
	else if (strncmp(message, "duration: ", 10) == 0)
	{
		/* "duration: 1.2 ms  statement: SQL" or "...  execute <name>: SQL" */
		const char *kind = strstr(message, "  ");
		const char *colon = kind ? strstr(kind, ": ") : NULL;

		if (colon != NULL)
			text_start = colon + 2;
	}
	else
	{
		/* "execute <name>: SQL", "parse <name>: SQL", "bind <name>: SQL" */
		for (int i = 0; named_kinds[i] != NULL; i++)
			if (strncmp(message, named_kinds[i], strlen(named_kinds[i])) == 0)
			{
				const char *colon = strstr(message + strlen(named_kinds[i]), ": ");

				if (colon != NULL)
					text_start = colon + 2;
				break;
			}
	}
	if (text_start == NULL)
		return NULL;
	return pnstrdup(message, text_start - message);
}

/*
 * secretenv's own messages never carry secret material.  Its C code is
 * compiled with TEXTDOMAIN "secretenv" (see Makefile); its SQL functions
 * raise only the SQLSTATEs of its own classes.
 */
static bool
is_secretenv_error(const ErrorData *edata)
{
	return (edata->domain != NULL && strcmp(edata->domain, TEXTDOMAIN) == 0) ||
		edata->sqlerrcode == ERRCODE_SECRETENV_KEK_NOT_CONFIGURED;
}

/*
 * The postmaster logs 'parameter "X" changed to "value"' on reload, and
 * the GUC machinery quotes rejected values: keep the setting's name, drop
 * its value.  Returns whether the record named a secret setting.
 */
static bool
redact_setting_value(ErrorData *edata)
{
	for (int i = 0; secret_settings[i] != NULL; i++)
	{
		char	   *quoted = psprintf("\"%s\"", secret_settings[i]);
		char	   *at = edata->message ? strstr(edata->message, quoted) : NULL;

		/* Only a message that goes on to quote something quotes the value. */
		if (at != NULL && strchr(at + strlen(quoted), '"') != NULL)
		{
			edata->message = psprintf("%.*s %s",
									  (int) (at - edata->message + strlen(quoted)),
									  edata->message, REDACTED_MARKER);
			if (edata->detail)
				edata->detail = pstrdup(REDACTED_MARKER);
			return true;
		}
	}
	return false;
}

static void
redact_record(ErrorData *edata)
{
	char	   *prefix;
	bool		statement_record;

	if (!(mentions_plaintext(debug_query_string) ||
		  mentions_plaintext(edata->message) ||
		  mentions_plaintext(edata->detail) ||
		  executes_plaintext_statement(debug_query_string)))
		return;

	edata->hide_stmt = true;
	if (redact_setting_value(edata))
		return;

	/* A CONTEXT may quote the SQL or the bind parameters of the statement. */
	if (edata->context)
		edata->context = pstrdup(REDACTED_MARKER);
	if (edata->internalquery)
		edata->internalquery = pstrdup(REDACTED_MARKER);

	prefix = edata->message ? statement_log_prefix(edata->message) : NULL;
	statement_record = prefix != NULL && edata->elevel == LOG;
	if (statement_record)
		edata->message = psprintf("%s%s", prefix, REDACTED_MARKER);
	else if (edata->elevel == LOG && mentions_plaintext(edata->message))
	{
		/* A log line of unknown shape that quotes such a statement: fail closed. */
		edata->message = pstrdup(REDACTED_MARKER);
		statement_record = true;
	}

	/*
	 * Input functions quote what they could not parse in the message itself
	 * ('invalid input syntax for type integer: "..."'): keep the message up
	 * to the first quote.
	 */
	if (!statement_record && !is_secretenv_error(edata) && edata->message &&
		ERRCODE_TO_CATEGORY(edata->sqlerrcode) == ERRCODE_DATA_EXCEPTION)
	{
		const char *quote = strchr(edata->message, '"');

		if (quote != NULL)
			edata->message = psprintf("%.*s%s", (int) (quote - edata->message),
									  edata->message, REDACTED_MARKER);
	}

	if (statement_record || !is_secretenv_error(edata))
	{
		if (edata->detail)
			edata->detail = pstrdup(REDACTED_MARKER);
		if (edata->detail_log)
			edata->detail_log = pstrdup(REDACTED_MARKER);
	}
}

static void
secretenv_emit_log_hook(ErrorData *edata)
{
	if (redact_logs)
		redact_record(edata);
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

void
se_redact_init(void)
{
	DefineCustomBoolVariable("secretenv.redact_logs",
							 "Keeps statements that pass plaintext to secretenv out of the server log.",
							 "Statement text, bind parameters and STATEMENT lines of such statements are replaced by a marker.",
							 &redact_logs,
							 true,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);

	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = secretenv_emit_log_hook;
}
