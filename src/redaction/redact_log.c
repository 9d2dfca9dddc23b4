/*-------------------------------------------------------------------------
 *
 * redact_log.c
 *	  Keep plaintexts and passphrases out of the server log.
 *
 * emit_log_hook sees every record before it is formatted for any
 * destination (stderr, csvlog, jsonlog, syslog) and sent to the client,
 * whoever emits it: core statement logging, errors, pgaudit, auto_explain.
 * redact.c says what a statement does; this file rewrites its records:
 *
 *	  - statement text (a statement-logging record: "statement: ",
 *		"execute <name>: ", "duration: ... statement: "; a pgaudit SESSION
 *		or OBJECT line) of a statement that takes a plaintext: its plaintext
 *		arguments are overwritten and the rest, the secret's name included,
 *		stays; where they cannot be located (a listed wrapper, a statement
 *		marked only at run time) every value is overwritten.  The bind
 *		parameters in its DETAIL lose the values of the $n that fill a
 *		plaintext argument (all of them when that cannot be told), and so do
 *		those of pgaudit's parameter list.  A pgaudit line of secretenv's
 *		own statement that calls nothing taking a plaintext (the INSERT
 *		nested in secret_create) stays whole: it is given the row written;
 *	  - an auto_explain plan of such a statement keeps its duration and
 *		loses the query text and the plan, which shows constants and
 *		parameters with log_verbose;
 *	  - every other record of a statement that takes or returns a plaintext
 *		(or, at ERROR and above, of a transaction that did: a deferred
 *		constraint at COMMIT), unless secretenv raised it itself: message,
 *		detail, hint and context become the marker, the SQLSTATE stays (a
 *		cast, a constraint or a trigger quoting the decrypted value).  The
 *		message stays for the classes whose messages name objects only
 *		(a constraint, a privilege: message_names_objects()).
 *		secretenv's own messages never carry a value and stay readable;
 *		so does the STATEMENT line of a statement that only returns one;
 *	  - an ERROR of a statement that takes a plaintext also scrubs the
 *		backend's pg_stat_activity entry, which PostgreSQL wrote before the
 *		parser ran (a syntax error, an aborted transaction, a wrong
 *		argument list).
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

#include "redaction/redact.h"
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
 * Where the SQL text starts in a statement-logging message: "statement: ",
 * "execute <name>: ", "duration: 1.234 ms  statement: " and the like, i.e.
 * after the last ": " before the SQL text.  *plan is set for auto_explain's
 * "duration: 1.2 ms  plan:\n<query text and plan>", whose text starts after
 * "plan:".  NULL if the message is not one of these.
 */
static const char *
statement_text_start(const char *message, bool *plan)
{
	static const char *const named_kinds[] = {"execute ", "parse ", "bind ", NULL};

	*plan = false;
	if (strncmp(message, "statement: ", 11) == 0)
		return message + 11;
	if (strncmp(message, "duration: ", 10) == 0)
	{
		const char *kind = strstr(message, "  ");
		const char *colon = kind ? strstr(kind, ": ") : NULL;

		if (kind != NULL && strncmp(kind, "  plan:", 7) == 0)
		{
			*plan = true;
			return kind + 7;
		}
		return colon != NULL ? colon + 2 : NULL;
	}
	for (int i = 0; named_kinds[i] != NULL; i++)
		if (strncmp(message, named_kinds[i], strlen(named_kinds[i])) == 0)
		{
			const char *colon = strstr(message + strlen(named_kinds[i]), ": ");

			return colon != NULL ? colon + 2 : NULL;
		}
	return NULL;
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
			return NULL;
		p++;
	}
	return pnstrdup(message, p - message);
}

/*
 * secretenv's own messages never carry secret material.  Its C code is
 * compiled with TEXTDOMAIN "secretenv" (see se_messages.h); its PL/pgSQL
 * functions raise with RAISE, whose innermost CONTEXT line names them; its
 * SQL functions raise only the SQLSTATEs of its own classes.
 */
static bool
raised_by_plpgsql(const ErrorData *edata)
{
	return edata->funcname != NULL && strcmp(edata->funcname, "exec_stmt_raise") == 0;
}

/*
 * The identifier at *p of a CONTEXT frame, quoted or not (secretenv's names
 * hold no quote): its characters in *name and *len, *p moved past it.
 */
static bool
frame_identifier(const char **p, const char **name, size_t *len)
{
	const char *s = *p;
	bool		quoted = (*s == '"');

	if (quoted)
		s++;
	*name = s;
	while (*s != '\0' && (quoted ? *s != '"' : (*s != '.' && *s != '(')))
		s++;
	*len = s - *name;
	if (quoted)
	{
		if (*s != '"')
			return false;
		s++;
	}
	*p = s;
	return *len > 0;
}

/*
 * Whether the CONTEXT frame at frame is one of a PL/pgSQL function of the
 * extension: "PL/pgSQL function secretenv.insert_secret(text,...) line 8
 * at RAISE", or with quote_all_identifiers on
 * "PL/pgSQL function "secretenv"."insert_secret"(text,...) ...".
 */
static bool
secretenv_plpgsql_frame(const char *frame)
{
	static const char plpgsql_frame[] = "PL/pgSQL function ";
	const char *p = frame;
	const char *name;
	size_t		len;

	if (strncmp(p, plpgsql_frame, sizeof(plpgsql_frame) - 1) != 0)
		return false;
	p += sizeof(plpgsql_frame) - 1;
	if (!frame_identifier(&p, &name, &len) ||
		len != strlen("secretenv") || strncmp(name, "secretenv", len) != 0 ||
		*p++ != '.' ||
		!frame_identifier(&p, &name, &len) || *p != '(')
		return false;
	return se_redact_catalog_raiser(name, len);
}

static bool
is_secretenv_error(const ErrorData *edata)
{
	if ((edata->domain != NULL && strcmp(edata->domain, TEXTDOMAIN) == 0) ||
		edata->sqlerrcode == ERRCODE_SECRETENV_KEK_NOT_CONFIGURED)
		return true;
	return raised_by_plpgsql(edata) && edata->context != NULL &&
		secretenv_plpgsql_frame(edata->context);
}

/*
 * Whether the statement sql, whose pgaudit line this is, is one of
 * secretenv's own: run by a PL/pgSQL function of the extension, i.e. the
 * innermost CONTEXT frame is that function's, after the frame SPI adds
 * for the statement itself ('SQL statement "<sql>"').
 */
static bool
secretenv_statement(const char *context, const char *sql)
{
	static const char spi_frame[] = "SQL statement \"";
	size_t		len = strlen(sql);

	if (context == NULL)
		return false;
	if (strncmp(context, spi_frame, sizeof(spi_frame) - 1) == 0)
	{
		context += sizeof(spi_frame) - 1;
		if (strncmp(context, sql, len) != 0 || strncmp(context + len, "\"\n", 2) != 0)
			return false;
		context += len + 2;
	}
	return secretenv_plpgsql_frame(context);
}

/*
 * An error a parallel worker raised and the leader rethrows: the worker's
 * own log hook, with the same rules, has redacted it already (a worker
 * marks its statement when it decrypts, and gets the scrubbed text), and
 * the leader cannot tell secretenv's errors in it any more (the text
 * domain is not relayed).
 */
static bool
relayed_from_worker(const ErrorData *edata)
{
	static const char frame[] = "parallel worker";
	size_t		len;

	if (edata->context == NULL)
		return false;
	len = strlen(edata->context);
	return len >= sizeof(frame) - 1 &&
		strcmp(edata->context + len - (sizeof(frame) - 1), frame) == 0 &&
		(len == sizeof(frame) - 1 || edata->context[len - sizeof(frame)] == '\n');
}

/*
 * Whether PostgreSQL's messages of the error's class name objects, never
 * values (those go to the DETAIL): integrity constraints ("violates check
 * constraint"), transaction state, resources, object state, operator
 * intervention, system errors, and insufficient privilege.  A RAISE may
 * say anything under any SQLSTATE, and is never one of them.
 */
static bool
message_names_objects(const ErrorData *edata)
{
	int			class = ERRCODE_TO_CATEGORY(edata->sqlerrcode);

	if (raised_by_plpgsql(edata))
		return false;
	return class == ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION ||
		class == ERRCODE_INVALID_TRANSACTION_STATE ||
		class == ERRCODE_TRANSACTION_ROLLBACK ||
		class == ERRCODE_INSUFFICIENT_RESOURCES ||
		class == ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE ||
		class == ERRCODE_OPERATOR_INTERVENTION ||
		class == ERRCODE_SYSTEM_ERROR ||
		edata->sqlerrcode == ERRCODE_INSUFFICIENT_PRIVILEGE;
}

/*
 * sql with what a statement that takes a plaintext must not show
 * overwritten: its plaintext arguments, or every value when they cannot be
 * located or the statement was marked only at run time.  *params receives
 * the $n whose bound values must go (all bits: every one).
 */
static char *
scrubbed_statement(const char *sql, size_t len, uint64 *params)
{
	char	   *copy = pnstrdup(sql, len);

	if (se_redact_scan_calls(copy, len, false, params) == SE_CALLS_ARGS)
		se_redact_scan_calls(copy, len, true, NULL);
	else
	{
		se_redact_scrub_in_place(copy, len);
		*params = ~UINT64CONST(0);
	}
	return copy;
}

/*
 * A bind parameter DETAIL ("parameters: $1 = '...', $2 = NULL"; from
 * PostgreSQL 16 "Parameters: ...") with the values of the $n in params
 * replaced by the marker; the marker alone if it is of another shape.
 */
static char *
scrubbed_parameters(const char *detail, uint64 params)
{
	StringInfoData out;
	const char *p = detail;
	const char *prefix = strstr(detail, "parameters: ");

	if (prefix == NULL)
		prefix = strstr(detail, "Parameters: ");

	if (params == ~UINT64CONST(0) || prefix == NULL)
		return pstrdup(SE_REDACTED_MARKER);
	initStringInfo(&out);
	p = prefix + 12;
	appendBinaryStringInfo(&out, detail, p - detail);
	while (*p == '$')
	{
		int			n = atoi(p + 1);
		const char *eq = strstr(p, " = ");
		const char *value;
		const char *end;

		if (eq == NULL || n < 1 || n > 64)
			return pstrdup(SE_REDACTED_MARKER);
		value = eq + 3;
		end = value;
		if (*end == '\'')
		{
			for (end++; *end; end++)
				if (*end == '\'')
				{
					if (end[1] == '\'')
						end++;
					else
					{
						end++;
						break;
					}
				}
		}
		else
			while (*end && *end != ',')
				end++;
		appendBinaryStringInfo(&out, p, value - p);
		if (params & (UINT64CONST(1) << (n - 1)))
			appendStringInfoString(&out, SE_REDACTED_MARKER);
		else
			appendBinaryStringInfo(&out, value, end - value);
		p = end;
		if (strncmp(p, ", ", 2) == 0)
		{
			appendStringInfoString(&out, ", ");
			p += 2;
		}
		else
			break;
	}
	if (*p != '\0')
		return pstrdup(SE_REDACTED_MARKER);
	return out.data;
}

/* Append s to buf as one CSV field, quoted as pgaudit quotes it. */
static void
append_csv(StringInfo buf, const char *s)
{
	if (strpbrk(s, ",\"\r\n") == NULL)
	{
		appendStringInfoString(buf, s);
		return;
	}
	appendStringInfoChar(buf, '"');
	for (; *s; s++)
	{
		if (*s == '"')
			appendStringInfoChar(buf, '"');
		appendStringInfoChar(buf, *s);
	}
	appendStringInfoChar(buf, '"');
}

/*
 * The statement text field of a pgaudit line (message = prefix, its first
 * fields, then that field, CSV-quoted when needed, then the parameter and
 * row count fields): unquoted, with *rest pointing after it.
 */
static char *
audit_text(const char *message, const char *prefix, const char **rest)
{
	const char *p = message + strlen(prefix);
	StringInfoData sql;

	initStringInfo(&sql);
	if (*p == '"')
	{
		for (p++; *p; p++)
		{
			if (*p == '"')
			{
				if (p[1] != '"')
				{
					p++;
					break;
				}
				p++;
			}
			appendStringInfoChar(&sql, *p);
		}
	}
	else
		for (; *p && *p != ','; p++)
			appendStringInfoChar(&sql, *p);
	*rest = p;
	return sql.data;
}

/*
 * One CSV field at *p, unquoted, appended to field; *p moved past it.
 * Returns false on a quoted field left open.
 */
static bool
read_csv_field(const char **p, StringInfo field)
{
	const char *s = *p;

	if (*s != '"')
	{
		for (; *s && *s != ','; s++)
			appendStringInfoChar(field, *s);
		*p = s;
		return true;
	}
	for (s++; *s; s++)
	{
		if (*s == '"')
		{
			if (s[1] != '"')
			{
				*p = s + 1;
				return true;
			}
			s++;
		}
		appendStringInfoChar(field, *s);
	}
	return false;
}

/*
 * The fields after the statement text of a pgaudit line (rest: ",PARAMS"
 * then ",ROWS" with log_rows) with the parameters in params (bit n - 1
 * for $n) replaced by the marker.  PARAMS is one CSV field holding the
 * values, each CSV-quoted, separated by commas, $1 first.  The marker in
 * place of the whole list if every parameter goes or rest is of another
 * shape.
 */
static char *
audit_parameters(const char *rest, uint64 params)
{
	StringInfoData list;
	StringInfoData kept;
	StringInfoData out;
	const char *p = rest + 1;
	const char *l;
	int			n = 0;

	if (strncmp(rest, ",<none>", 7) == 0 || strncmp(rest, ",<not logged>", 13) == 0 ||
		*rest == '\0')
		return pstrdup(rest);
	initStringInfo(&list);
	if (params == ~UINT64CONST(0) || *rest != ',' || !read_csv_field(&p, &list) ||
		(*p != '\0' && (*p != ',' || strspn(p + 1, "0123456789") != strlen(p + 1))))
		return psprintf(",%s", SE_REDACTED_MARKER);

	initStringInfo(&kept);
	for (l = list.data;; l++)
	{
		StringInfoData value;
		const char *start = l;

		initStringInfo(&value);
		if (n >= 64 || !read_csv_field(&l, &value) || (*l != ',' && *l != '\0'))
			return psprintf(",%s", SE_REDACTED_MARKER);
		if (n > 0)
			appendStringInfoChar(&kept, ',');
		if (params & (UINT64CONST(1) << n))
			appendStringInfoString(&kept, SE_REDACTED_MARKER);
		else
			appendBinaryStringInfo(&kept, start, l - start);
		n++;
		if (*l == '\0')
			break;
	}
	initStringInfo(&out);
	appendStringInfoChar(&out, ',');
	append_csv(&out, kept.data);
	appendStringInfoString(&out, p);
	return out.data;
}

/*
 * A pgaudit line of a statement that takes a plaintext.  One that calls a
 * plaintext-taking function itself: its plaintext arguments overwritten,
 * and the parameters that fill them replaced by the marker.  One of
 * secretenv's own statements that calls none (the INSERT of
 * insert_secret, the UPDATE of replace_secret_value: they are given the
 * row being written, never the plaintext): as it is, so that it names the
 * secret.  Any other (a user's function run by a statement that passed a
 * plaintext): every value of its text, and its parameters, overwritten.
 */
static char *
redacted_audit_line(const ErrorData *edata, const char *prefix)
{
	const char *rest;
	char	   *sql = audit_text(edata->message, prefix, &rest);
	StringInfoData out;
	uint64		params;
	char	   *scrubbed;

	if (se_redact_scan_calls(sql, strlen(sql), false, NULL) == SE_CALLS_NONE &&
		secretenv_statement(edata->context, sql))
		return edata->message;
	scrubbed = scrubbed_statement(sql, strlen(sql), &params);
	initStringInfo(&out);
	appendStringInfoString(&out, prefix);
	append_csv(&out, scrubbed);
	appendStringInfoString(&out, audit_parameters(rest, params));
	return out.data;
}

/*
 * Whether the record carries statement text (a statement-logging line, a
 * pgaudit line) and, if so, whether that text itself makes a
 * plaintext-taking call: a nested statement's text, logged before the
 * statement around it has reached secretenv.
 */
static bool
statement_record(const ErrorData *edata, bool log_level, bool *text_takes)
{
	char	   *prefix;
	const char *text;
	bool		plan;

	*text_takes = false;
	if (edata->message == NULL)
		return false;
	if ((prefix = audit_prefix(edata->message)) != NULL)
	{
		const char *rest;
		char	   *sql = audit_text(edata->message, prefix, &rest);

		*text_takes = se_redact_scan_calls(sql, strlen(sql), false, NULL) != SE_CALLS_NONE;
		return true;
	}
	if (!log_level || (text = statement_text_start(edata->message, &plan)) == NULL)
		return false;
	if (!plan)
		*text_takes = se_redact_scan_calls((char *) text, strlen(text), false, NULL) != SE_CALLS_NONE;
	return true;
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

/*
 * A record carrying statement text, of a statement that takes a
 * plaintext: returns whether it was one (and was rewritten).
 */
static bool
redact_statement_record(ErrorData *edata, bool log_level)
{
	char	   *prefix;
	const char *text;
	bool		plan;
	uint64		params = ~UINT64CONST(0);

	if (edata->message == NULL)
		return false;
	/* pgaudit logs at any level (pgaudit.log_level with log_client). */
	if ((prefix = audit_prefix(edata->message)) != NULL)
	{
		edata->message = redacted_audit_line(edata, prefix);
		return true;
	}
	if (!log_level || (text = statement_text_start(edata->message, &plan)) == NULL)
		return false;
	if (plan)
		edata->message = psprintf("%.*s %s", (int) (text - edata->message),
								  edata->message, SE_REDACTED_MARKER);
	else
	{
		char	   *scrubbed = scrubbed_statement(text, strlen(text), &params);

		edata->message = psprintf("%.*s%s", (int) (text - edata->message),
								  edata->message, scrubbed);
	}
	/* Bind parameters, or the PREPARE text of an EXECUTE. */
	if (edata->detail)
		edata->detail = strncmp(edata->detail, "prepare: ", 9) == 0 ?
			pstrdup(SE_REDACTED_MARKER) : scrubbed_parameters(edata->detail, params);
	if (edata->detail_log)
		edata->detail_log = strncmp(edata->detail_log, "prepare: ", 9) == 0 ?
			pstrdup(SE_REDACTED_MARKER) : scrubbed_parameters(edata->detail_log, params);
	return true;
}

static void
redact_record(ErrorData *edata)
{
	bool		log_level = edata->elevel == LOG || edata->elevel == LOG_SERVER_ONLY;
	bool		takes;
	bool		yields;
	bool		own;
	bool		is_statement;
	bool		text_takes;

	if (redact_setting_value(edata))
	{
		edata->hide_stmt = true;
		return;
	}

	is_statement = statement_record(edata, log_level, &text_takes);
	takes = text_takes || se_redact_carries_plaintext(debug_query_string);
	yields = takes || se_redact_statement_yields() ||
		(edata->elevel >= ERROR && se_redact_xact_marked());
	if (!yields)
		return;

	/*
	 * PostgreSQL wrote the text to pg_stat_activity before parsing it; a
	 * statement that fails before secretenv's hooks saw it leaves it there.
	 */
	if (takes && edata->elevel >= ERROR)
		se_redact_stats_scrub_activity();

	if (takes && redact_statement_record(edata, log_level))
	{
		edata->hide_stmt = true;
		if (edata->context)
			edata->context = pstrdup(SE_REDACTED_MARKER);
		return;
	}
	/* Statement records of a statement that only returns a plaintext: as they are. */
	if (!takes && is_statement)
		return;

	own = is_secretenv_error(edata) || relayed_from_worker(edata);
	/* A STATEMENT line quotes the plaintext arguments; a CONTEXT may quote anything. */
	if (takes)
	{
		edata->hide_stmt = true;
		if (edata->context)
			edata->context = pstrdup(SE_REDACTED_MARKER);
		if (edata->internalquery)
			edata->internalquery = pstrdup(SE_REDACTED_MARKER);
	}
	if (own)
		return;
	if (edata->message && !message_names_objects(edata))
		edata->message = pstrdup(SE_REDACTED_MARKER);
	if (edata->detail)
		edata->detail = pstrdup(SE_REDACTED_MARKER);
	if (edata->detail_log)
		edata->detail_log = pstrdup(SE_REDACTED_MARKER);
	if (edata->hint)
		edata->hint = pstrdup(SE_REDACTED_MARKER);
	if (edata->context)
		edata->context = pstrdup(SE_REDACTED_MARKER);
	if (edata->internalquery)
		edata->internalquery = pstrdup(SE_REDACTED_MARKER);
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
