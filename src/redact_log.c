/*-------------------------------------------------------------------------
 *
 * redact_log.c
 *	  Keep plaintexts and passphrases out of the server log.
 *
 * emit_log_hook sees every record before it is formatted for any
 * destination (stderr, csvlog, jsonlog, syslog), whoever emits it: core
 * statement logging, errors, pgaudit, auto_explain.  It rewrites the
 * records of a statement that carries a plaintext (redact.c decides):
 *
 *	  - a statement-logging record ("statement: ", "execute <name>: ",
 *		"duration: ... ms  statement: ") keeps its prefix and loses the SQL
 *		text; its DETAIL (bind parameters, the PREPARE text of an EXECUTE)
 *		is replaced by the marker;
 *	  - a pgaudit line ("AUDIT: SESSION,..." or "AUDIT: OBJECT,...") keeps
 *		its audit fields (type, statement and substatement ids, class,
 *		command, object type and name) and loses the statement text, the
 *		parameter list and what follows;
 *	  - an auto_explain plan keeps its duration and loses the query text
 *		and the plan, which shows constants and parameters with log_verbose;
 *	  - the STATEMENT line of any record is suppressed, and every CONTEXT
 *		(which may quote the SQL or the bind parameters,
 *		log_parameter_max_length_on_error) is replaced by the marker;
 *	  - errors raised inside it by other code (a jsonb parser quoting its
 *		input) lose their DETAIL; secretenv's own errors, which never carry
 *		secret material, keep theirs.
 *
 * A record that quotes the value of a passphrase setting (the postmaster's
 * 'parameter ... changed to ...' on reload, a rejected value) keeps the
 * setting's name and loses the value.  Everything else in the log is
 * untouched.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "tcop/tcopprot.h"
#include "utils/elog.h"

#include "redact.h"
#include "se_messages.h"

static emit_log_hook_type prev_emit_log_hook = NULL;

/* Settings whose values must never be logged. */
static const char *const secret_settings[] = {
	"secretenv.kek_passphrase",
	"secretenv.kek_previous_passphrase",
	"secretenv.kek_passphrase_command",
	NULL
};

/* Fields of a pgaudit line kept before its statement text. */
#define AUDIT_FIELDS_KEPT 7

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

		/* auto_explain: "duration: 1.2 ms  plan:\n<query text and plan>" */
		if (kind != NULL && strncmp(kind, "  plan:", 7) == 0)
			return psprintf("%.*s ", (int) (kind + 7 - message), message);
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
 * pgaudit's "AUDIT: TYPE,stmt,substmt,CLASS,COMMAND,OBJTYPE,OBJNAME,SQL,
 * PARAMS[,ROWS]": the part up to and including the comma before SQL, with
 * the CSV quoting pgaudit applies to a field holding a comma or a quote.
 * NULL if the message is not such a line.
 */
static char *
audit_prefix(const char *message)
{
	const char *p;

	if (strncmp(message, "AUDIT: ", 7) != 0)
		return NULL;
	p = message + 7;
	for (int field = 0; field < AUDIT_FIELDS_KEPT; field++)
	{
		if (*p == '"')
		{
			for (p++; *p; p++)
				if (*p == '"')
				{
					if (p[1] == '"')
						p++;
					else
					{
						p++;
						break;
					}
				}
		}
		else
			while (*p && *p != ',')
				p++;
		if (*p != ',')
			return pstrdup("AUDIT: ");
		p++;
	}
	return pnstrdup(message, p - message);
}

/*
 * secretenv's own messages never carry secret material.  Its C code is
 * compiled with TEXTDOMAIN "secretenv" (see se_messages.h); its SQL functions
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
									  edata->message, SE_REDACTED_MARKER);
			if (edata->detail)
				edata->detail = pstrdup(SE_REDACTED_MARKER);
			return true;
		}
	}
	return false;
}

static void
redact_record(ErrorData *edata)
{
	char	   *prefix = NULL;
	bool		log_level = edata->elevel == LOG || edata->elevel == LOG_SERVER_ONLY;
	bool		statement_record = false;

	if (!(se_redact_carries_plaintext(debug_query_string) ||
		  se_redact_mentions_plaintext(edata->message) ||
		  se_redact_mentions_plaintext(edata->detail)))
		return;

	edata->hide_stmt = true;
	if (redact_setting_value(edata))
		return;

	/* A CONTEXT may quote the SQL or the bind parameters of the statement. */
	if (edata->context)
		edata->context = pstrdup(SE_REDACTED_MARKER);
	if (edata->internalquery)
		edata->internalquery = pstrdup(SE_REDACTED_MARKER);

	/* pgaudit logs at any level (pgaudit.log_level with log_client). */
	if (edata->message)
		prefix = audit_prefix(edata->message);
	if (prefix == NULL && edata->message && log_level)
		prefix = statement_log_prefix(edata->message);
	if (prefix != NULL)
	{
		edata->message = psprintf("%s%s", prefix, SE_REDACTED_MARKER);
		statement_record = true;
	}
	else if (log_level && se_redact_mentions_plaintext(edata->message))
	{
		/* A log line of unknown shape that quotes such a statement: fail closed. */
		edata->message = pstrdup(SE_REDACTED_MARKER);
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
									  edata->message, SE_REDACTED_MARKER);
	}

	if (statement_record || !is_secretenv_error(edata))
	{
		if (edata->detail)
			edata->detail = pstrdup(SE_REDACTED_MARKER);
		if (edata->detail_log)
			edata->detail_log = pstrdup(SE_REDACTED_MARKER);
	}
}

static void
secretenv_emit_log_hook(ErrorData *edata)
{
	if (se_redact_enabled())
		redact_record(edata);
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

void
se_redact_log_init(void)
{
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = secretenv_emit_log_hook;
}
