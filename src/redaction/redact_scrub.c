/*-------------------------------------------------------------------------
 *
 * redact_scrub.c
 *	  Overwrite the values in a statement's text, keeping its shape.
 *
 * pg_stat_activity and pg_stat_statements keep statement texts.  For a
 * statement that carries a plaintext they get a scrubbed copy: the
 * contents of every string constant (standard, escape E'', bit, hex,
 * Unicode U&''), every dollar-quoted string, every comment and every
 * digit of a numeric constant are overwritten; keywords, names, operators
 * and $n parameters stay readable.  The body of a DO block is code, and is
 * scrubbed the same way.
 *
 * The copy has exactly the length and the token boundaries of the
 * original, byte for byte.  That is what makes it safe to hand to code that
 * holds offsets into the text it was parsed from: statement locations and
 * lengths (pg_stat_statements cuts a statement out of a multi-statement
 * string by them, and normalises constants by re-scanning at their
 * locations), error cursor positions.  It also lets a text already handed
 * down be scrubbed later, in place, when the statement turns out to carry
 * a plaintext only while it runs.  The lengths of the constants stay
 * visible; their contents do not.
 *
 * The scanner never throws: an unterminated constant or comment is
 * overwritten to the end of the text.
 *
 * For a statement whose plaintext arguments can be located (see
 * se_redact_scan_calls below) only those arguments and the comments are
 * overwritten, with the same rules: names, including the secret's, stay.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "commands/prepare.h"
#include "parser/parser.h"

#include "pg_compat.h"
#include "redaction/redact.h"
#include "se_messages.h"

static inline bool
ident_start(unsigned char c)
{
	return isalpha(c) || c == '_' || c >= 0x80;
}

static inline bool
ident_cont(unsigned char c)
{
	return ident_start(c) || isdigit(c) || c == '$';
}

/*
 * Whether the dollar quote opening at s[i] is the body of a DO statement
 * ("DO $$...$$"): that body is code, scrubbed like a statement so that the
 * text stays readable.  Any other dollar-quoted string is a value, and is
 * overwritten whole (so is the body of "DO LANGUAGE x $$...$$").
 */
static bool
follows_do(const char *s, size_t i)
{
	while (i > 0 && isspace((unsigned char) s[i - 1]))
		i--;
	return i >= 2 && pg_strncasecmp(s + i - 2, "do", 2) == 0 &&
		(i == 2 || !ident_cont((unsigned char) s[i - 3]));
}

/* Overwrite s[from, to) with fill. */
static inline void
overwrite(char *s, size_t from, size_t to, char fill)
{
	if (to > from)
		memset(s + from, fill, to - from);
}

/*
 * A quoted constant opening at s[i] (a single quote): returns the index of
 * its closing quote, or len.  Backslash escapes count in E'' strings, and
 * in every string when standard_conforming_strings is off.
 */
static size_t
string_end(const char *s, size_t len, size_t i, bool backslash)
{
	for (i++; i < len; i++)
	{
		if (backslash && s[i] == '\\' && i + 1 < len)
			i++;
		else if (s[i] == '\'')
		{
			if (i + 1 < len && s[i + 1] == '\'')
				i++;
			else
				return i;
		}
	}
	return len;
}

/*
 * The end of the comment opening at s[i] (a "--" comment, or a C-style
 * one, which nest), and with scrub its contents overwritten.
 */
static size_t
skip_comment(char *s, size_t len, size_t i, bool scrub)
{
	size_t		end = i + 2;

	if (s[i] == '-')
	{
		while (end < len && s[end] != '\n' && s[end] != '\r')
			end++;
		if (scrub)
			overwrite(s, i + 2, end, ' ');
	}
	else
	{
		int			depth = 1;

		while (end < len && depth > 0)
		{
			if (s[end] == '/' && end + 1 < len && s[end + 1] == '*')
			{
				depth++;
				end += 2;
			}
			else if (s[end] == '*' && end + 1 < len && s[end + 1] == '/')
			{
				depth--;
				end += 2;
			}
			else
				end++;
		}
		if (scrub)
			overwrite(s, i + 2, depth == 0 ? end - 2 : len, ' ');
	}
	return end;
}

/*
 * For a "$" at s[i]: the index of the "$" closing its tag when it opens a
 * dollar quote ("$$", "$tag$"), len otherwise.
 */
static size_t
dollar_tag_end(const char *s, size_t len, size_t i)
{
	size_t		tag_end = i + 1;

	if (tag_end < len && ident_start((unsigned char) s[tag_end]))
		for (tag_end++; tag_end < len && s[tag_end] != '$' &&
			 ident_cont((unsigned char) s[tag_end]); tag_end++)
			;
	return tag_end < len && s[tag_end] == '$' ? tag_end : len;
}

void
se_redact_scrub_in_place(char *s, size_t len)
{
	size_t		i = 0;

	while (i < len)
	{
		unsigned char c = (unsigned char) s[i];

		if ((c == '-' && i + 1 < len && s[i + 1] == '-') ||
			(c == '/' && i + 1 < len && s[i + 1] == '*'))
			i = skip_comment(s, len, i, true);
		else if (c == '\'')
		{
			/* E'...' is an escape string; the E was skipped as a name. */
			bool		backslash = !standard_conforming_strings_compat ||
				(i >= 1 && (s[i - 1] == 'e' || s[i - 1] == 'E') &&
				 (i < 2 || !ident_cont((unsigned char) s[i - 2])));
			size_t		end = string_end(s, len, i, backslash);

			overwrite(s, i + 1, end, '*');
			i = end < len ? end + 1 : len;
		}
		else if (c == '"')
		{
			/* A quoted name: kept, but skipped whole. */
			for (i++; i < len; i++)
				if (s[i] == '"')
				{
					if (i + 1 < len && s[i + 1] == '"')
						i++;
					else
						break;
				}
			i = i < len ? i + 1 : len;
		}
		else if (c == '$' && i + 1 < len && isdigit((unsigned char) s[i + 1]))
		{
			/* $n parameter */
			for (i++; i < len && isdigit((unsigned char) s[i]); i++)
				;
		}
		else if (c == '$' && dollar_tag_end(s, len, i) < len)
		{
			/* $tag$ ... $tag$ dollar quoting (the tag may be empty) */
			size_t		tag_end = dollar_tag_end(s, len, i);
			size_t		taglen = tag_end - i + 1;
			size_t		body = tag_end + 1;
			size_t		end = body;

			while (end < len &&
				   !(end + taglen <= len && memcmp(s + end, s + i, taglen) == 0))
				end++;
			if (end < len && follows_do(s, i))
				se_redact_scrub_in_place(s + body, end - body);
			else
				overwrite(s, body, end < len ? end : len, '*');
			i = end < len ? end + taglen : len;
		}
		else if (ident_start(c))
		{
			/* keyword or name, including the E, B, X, U& prefixes */
			for (i++; i < len && ident_cont((unsigned char) s[i]); i++)
				;
		}
		else if (isdigit(c))
		{
			s[i] = '0';
			i++;
		}
		else
			i++;
	}
}

/*
 * Calls at token level.
 *
 * Before parse analysis (log_statement's line, a statement the parser
 * rejects, the text logged by pgaudit or in a bind's DETAIL) all there is
 * of a statement is its text.  se_redact_scan_calls() finds in it the calls
 * of functions that take a plaintext: an identifier followed by "(", never
 * inside a comment, a string or a quoted name.  The arguments those
 * functions take a plaintext in (redact_catalog.c derives them) are the
 * only parts of the text overwritten, so the secret's name stays readable.
 * When the text does something whose plaintext cannot be located (a name
 * from secretenv.redact_names, a passphrase setting, a quoted DO body, an
 * EXECUTE of a prepared statement that takes one, a text read before the
 * catalog was), the verdict is SE_CALLS_ALL: every value is overwritten.
 *
 * The core scanner (which pg_stat_statements uses) is not used: it throws
 * on an unterminated constant, and this runs from the log hook, on texts
 * the parser has rejected.
 */

/* A level of parentheses or brackets of the text being scanned. */
typedef struct CallFrame
{
	bool		takes;			/* the call of a plaintext-taking function */
	bool		set_config;		/* a call of set_config() */
	uint32		positions;		/* its plaintext argument positions */
	int			arg;			/* index of the current argument */
	size_t		arg_start;
	int			arg_tokens;		/* tokens seen in the current argument */
	bool		arg_plaintext;	/* the current argument holds a plaintext */
	bool		arg_ident;		/* ... and contains a name (not a constant) */
} CallFrame;

#define MAX_CALL_DEPTH 64

typedef struct CallScan
{
	char	   *s;
	bool		scrub;
	int			verdict;
	uint64		params;			/* $n (1..64) inside plaintext arguments */
	bool		params_unknown; /* a plaintext argument holds a name */
} CallScan;

static void
raise_verdict(CallScan *scan, int verdict)
{
	if (verdict > scan->verdict)
		scan->verdict = verdict;
}

static void
close_argument(CallScan *scan, CallFrame *frame, size_t end)
{
	if (frame->takes && frame->arg_plaintext && frame->arg_tokens > 0)
	{
		raise_verdict(scan, SE_CALLS_ARGS);
		if (frame->arg_ident)
			scan->params_unknown = true;
		if (scan->scrub)
			se_redact_scrub_in_place(scan->s + frame->arg_start, end - frame->arg_start);
	}
}

static void
open_argument(CallFrame *frame, size_t start)
{
	frame->arg_start = start;
	frame->arg_tokens = 0;
	frame->arg_ident = false;
	frame->arg_plaintext = frame->takes && frame->arg < 32 &&
		(frame->positions & ((uint32) 1 << frame->arg)) != 0;
}

/*
 * Whether the name s[0..len) (already case-folded or as quoted) is a
 * passphrase setting: the value that follows it in SET or ALTER SYSTEM is
 * a secret.
 */
static bool
passphrase_setting(const char *name, size_t len)
{
	return (len == 14 && strncmp(name, "kek_passphrase", 14) == 0) ||
		(len == 23 && strncmp(name, "kek_previous_passphrase", 23) == 0) ||
		(len == 22 && strncmp(name, "kek_passphrase_command", 22) == 0);
}

/* Case-insensitive search of needle in s[0..len). */
static bool
contains_ci(const char *s, size_t len, const char *needle)
{
	size_t		n = strlen(needle);

	for (size_t i = 0; i + n <= len; i++)
		if (pg_strncasecmp(s + i, needle, n) == 0)
			return true;
	return false;
}

/* Whether a quoted DO body s[0..len) names a function that carries a plaintext. */
static bool
quoted_body_mentions(const char *s, size_t len)
{
	return contains_ci(s, len, "passphrase") || se_redact_catalog_mentions(s, len);
}

/*
 * Whether the prepared statement prepared_name of this session makes a
 * plaintext-taking call in its text: "EXECUTE p('x')" itself makes none.
 * Only looks names up; never throws.
 */
static bool
executes_plaintext(const char *prepared_name)
{
	PreparedStatement *prepared = FetchPreparedStatement(prepared_name, false);
	const char *text;

	if (prepared == NULL || (text = prepared->plansource->query_string) == NULL)
		return false;
	return se_redact_scan_calls((char *) text, strlen(text), false, NULL) != SE_CALLS_NONE;
}

static void
scan_calls(CallScan *scan, size_t from, size_t len)
{
	char	   *s = scan->s;
	CallFrame	frames[MAX_CALL_DEPTH];
	int			depth = 0;
	size_t		i = from;
	char		ident[NAMEDATALEN];
	bool		have_ident = false; /* the previous token was a name */
	bool		after_cast = false; /* the previous token was "::" */
	bool		after_do = false;	/* the previous token was DO */
	bool		after_execute = false;
	bool		after_language = false; /* ... and LANGUAGE after DO */

	while (i < len)
	{
		unsigned char c = (unsigned char) s[i];
		bool		was_ident = have_ident;
		bool		was_cast = after_cast;
		bool		was_do = after_do;
		bool		was_execute = after_execute;
		bool		was_language = after_language;
		CallFrame  *frame = depth > 0 ? &frames[depth - 1] : NULL;

		if (isspace(c))
		{
			i++;
			continue;
		}
		if ((c == '-' && i + 1 < len && s[i + 1] == '-') ||
			(c == '/' && i + 1 < len && s[i + 1] == '*'))
		{
			i = skip_comment(s, len, i, scan->scrub);
			continue;
		}

		have_ident = after_cast = after_do = after_execute = after_language = false;
		if (frame != NULL)
			frame->arg_tokens++;

		if (c == '\'')
		{
			bool		backslash = !standard_conforming_strings_compat ||
				(i >= 1 && (s[i - 1] == 'e' || s[i - 1] == 'E') &&
				 (i < 2 || !ident_cont((unsigned char) s[i - 2])));
			size_t		end = string_end(s, len, i, backslash);

			if (was_do && quoted_body_mentions(s + i + 1, end - i - 1))
				raise_verdict(scan, SE_CALLS_ALL);
			if (frame != NULL && frame->set_config && frame->arg == 0 &&
				contains_ci(s + i + 1, end - i - 1, "passphrase"))
				raise_verdict(scan, SE_CALLS_ALL);
			i = end < len ? end + 1 : len;
		}
		else if (c == '"' || ident_start(c))
		{
			size_t		n = 0;
			size_t		start = i;

			if (c == '"')
			{
				for (i++; i < len; i++)
				{
					if (s[i] == '"')
					{
						if (i + 1 < len && s[i + 1] == '"')
							i++;
						else
							break;
					}
					if (n < NAMEDATALEN - 1)
						ident[n++] = s[i];
				}
				i = i < len ? i + 1 : len;
			}
			else
			{
				/* E'', B'', X'', U&'' prefixes: the constant follows. */
				for (; i < len && ident_cont((unsigned char) s[i]); i++)
					if (n < NAMEDATALEN - 1)
						ident[n++] = pg_tolower((unsigned char) s[i]);
				if (i < len && s[i] == '\'' && i - start <= 2)
				{
					if (frame != NULL)
						frame->arg_tokens--;
					continue;
				}
			}
			ident[n] = '\0';
			have_ident = true;
			if (frame != NULL && frame->arg_plaintext && !was_cast)
				frame->arg_ident = true;
			if (passphrase_setting(ident, n))
				raise_verdict(scan, SE_CALLS_ALL);
			/* "DO [LANGUAGE name] body": the body is still to come. */
			if (c != '"' && n == 2 && strcmp(ident, "do") == 0)
				after_do = true;
			else if (was_do && c != '"' && n == 8 && strcmp(ident, "language") == 0)
				after_do = after_language = true;
			else if (was_do && was_language)
				after_do = true;
			else if (was_execute && executes_plaintext(ident))
				raise_verdict(scan, SE_CALLS_ALL);
			if (c != '"' && n == 7 && strcmp(ident, "execute") == 0)
				after_execute = true;
		}
		else if (c == '$' && i + 1 < len && isdigit((unsigned char) s[i + 1]))
		{
			int			n = 0;

			for (i++; i < len && isdigit((unsigned char) s[i]); i++)
				n = n < 1000 ? n * 10 + (s[i] - '0') : n;
			for (int d = 0; d < depth; d++)
				if (frames[d].takes && frames[d].arg_plaintext)
				{
					if (n >= 1 && n <= 64)
						scan->params |= UINT64CONST(1) << (n - 1);
					else
						scan->params_unknown = true;
				}
		}
		else if (c == '$' && dollar_tag_end(s, len, i) < len)
		{
			size_t		tag_end = dollar_tag_end(s, len, i);
			size_t		taglen = tag_end - i + 1;
			size_t		body = tag_end + 1;
			size_t		end = body;

			while (end < len &&
				   !(end + taglen <= len && memcmp(s + end, s + i, taglen) == 0))
				end++;
			if (was_do && end < len)
			{
				/* A DO body is code: its calls are calls of the statement. */
				CallScan	inner = *scan;

				inner.verdict = SE_CALLS_NONE;
				scan_calls(&inner, body, end);
				raise_verdict(scan, inner.verdict);
				scan->params |= inner.params;
				scan->params_unknown |= inner.params_unknown;
			}
			else if (frame != NULL && frame->set_config && frame->arg == 0 &&
					 contains_ci(s + body, end - body, "passphrase"))
				raise_verdict(scan, SE_CALLS_ALL);
			i = end < len ? end + taglen : len;
		}
		else if (c == '(' || c == '[')
		{
			if (depth == MAX_CALL_DEPTH)
			{
				/* Deeper than any statement worth reading: fail closed. */
				raise_verdict(scan, SE_CALLS_ALL);
				return;
			}
			frame = &frames[depth++];
			memset(frame, 0, sizeof(CallFrame));
			if (c == '(' && was_ident)
			{
				int			kind = se_redact_catalog_call(ident, &frame->positions);

				if (kind == SE_FUNCTION_TAKES)
					frame->takes = true;
				else if (kind == SE_FUNCTION_UNKNOWN)
					raise_verdict(scan, SE_CALLS_ALL);
				frame->set_config = strcmp(ident, "set_config") == 0;
			}
			i++;
			open_argument(frame, i);
		}
		else if (frame != NULL && c == ',')
		{
			frame->arg_tokens--;
			close_argument(scan, frame, i);
			frame->arg++;
			i++;
			open_argument(frame, i);
		}
		else if (frame != NULL && (c == ')' || c == ']'))
		{
			frame->arg_tokens--;
			close_argument(scan, frame, i);
			depth--;
			i++;
		}
		else if (frame != NULL && frame->takes && frame->arg_tokens == 2 && was_ident &&
				 i + 1 < len && ((s[i] == '=' && s[i + 1] == '>') ||
								 (s[i] == ':' && s[i + 1] == '=')))
		{
			/* Named notation, "value => ..." or "value := ...": the name decides. */
			frame->arg_plaintext = se_redact_plaintext_parameter(ident);
			frame->arg_ident = false;
			frame->arg_tokens = 0;
			i += 2;
			frame->arg_start = i;
		}
		else if (c == ':' && i + 1 < len && s[i + 1] == ':')
		{
			after_cast = true;
			i += 2;
		}
		else if (isdigit(c) || (c == '.' && i + 1 < len && isdigit((unsigned char) s[i + 1])))
		{
			for (i++; i < len && (isalnum((unsigned char) s[i]) || s[i] == '.' || s[i] == '_'); i++)
				;
		}
		else
			i++;
	}
	/* Unterminated calls: their arguments run to the end of the text. */
	while (depth > 0)
	{
		close_argument(scan, &frames[depth - 1], len);
		depth--;
	}
}

/*
 * What the text s[0..len) calls, see SE_CALLS_*.  With scrub, the plaintext
 * arguments found (SE_CALLS_ARGS) and the comments are overwritten in
 * place; *params, when given, receives the bit of each $n (1 to 64) inside
 * a plaintext argument, or all bits when they cannot be told.
 */
int
se_redact_scan_calls(char *s, size_t len, bool scrub, uint64 *params)
{
	CallScan	scan;

	scan.s = s;
	scan.scrub = scrub;
	scan.verdict = SE_CALLS_NONE;
	scan.params = 0;
	scan.params_unknown = false;
	scan_calls(&scan, 0, len);
	if (params != NULL)
		*params = (scan.params_unknown || scan.verdict == SE_CALLS_ALL) ?
			~UINT64CONST(0) : scan.params;
	return scan.verdict;
}

/*
 * Overwrite in s[0..len) what a statement carrying a plaintext must not
 * show: its plaintext arguments when they can be located, every value
 * otherwise.
 */
void
se_redact_scrub_statement(char *s, size_t len)
{
	if (se_redact_scan_calls(s, len, false, NULL) == SE_CALLS_ARGS)
		se_redact_scan_calls(s, len, true, NULL);
	else
		se_redact_scrub_in_place(s, len);
}
