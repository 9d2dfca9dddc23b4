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
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "parser/parser.h"

#include "pg_compat.h"
#include "redact.h"
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

void
se_redact_scrub_in_place(char *s, size_t len)
{
	size_t		i = 0;

	while (i < len)
	{
		unsigned char c = (unsigned char) s[i];

		if (c == '-' && i + 1 < len && s[i + 1] == '-')
		{
			/* -- comment, to the end of the line */
			size_t		end = i + 2;

			while (end < len && s[end] != '\n' && s[end] != '\r')
				end++;
			overwrite(s, i + 2, end, ' ');
			i = end;
		}
		else if (c == '/' && i + 1 < len && s[i + 1] == '*')
		{
			/* C-style comment; they nest in SQL */
			size_t		end = i + 2;
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
			overwrite(s, i + 2, depth == 0 ? end - 2 : len, ' ');
			i = end;
		}
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
		else if (c == '$')
		{
			/* $tag$ ... $tag$ dollar quoting (the tag may be empty) */
			size_t		tag_end = i + 1;

			if (tag_end < len && ident_start((unsigned char) s[tag_end]))
				for (tag_end++; tag_end < len && s[tag_end] != '$' &&
					 ident_cont((unsigned char) s[tag_end]); tag_end++)
					;
			if (tag_end < len && s[tag_end] == '$')
			{
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
			else
				i++;
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

/* A scrubbed copy of sql, allocated in the current memory context. */
char *
se_redact_scrubbed_copy(const char *sql)
{
	size_t		len = strlen(sql);
	char	   *copy = palloc(len + 1);

	memcpy(copy, sql, len + 1);
	se_redact_scrub_in_place(copy, len);
	return copy;
}
