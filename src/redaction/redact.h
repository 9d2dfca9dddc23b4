/*-------------------------------------------------------------------------
 *
 * redact.h
 *	  Keeping plaintexts out of every channel that keeps statement text.
 *
 * redact_catalog.c derives from the catalog which functions and views take
 * or return a plaintext (and holds the names secretenv.redact_names adds),
 * and finds their calls in a query tree; redact.c marks the current
 * statement (by those calls, by the calls its text makes, or because it
 * passed a plaintext to secretenv or got one from it while running);
 * redact_scrub.c overwrites the values, or only the plaintext arguments, in
 * a copy of its text; redact_log.c rewrites its server log records;
 * redact_stats.c hands the scrubbed text to pg_stat_activity and to
 * pg_stat_statements.
 *
 * Each file calls only those listed before it here (catalog, scrub,
 * redact.c, stats, log); redaction_init.c calls their inits.  redact.c
 * reaches redact_stats.c only through the callback that file sets.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRETENV_REDACT_H
#define SECRETENV_REDACT_H

#include "nodes/parsenodes.h"

#define SE_REDACTED_MARKER "[secretenv: redacted]"

/* What a statement text calls (se_redact_scan_calls), in rising order. */
#define SE_CALLS_NONE	0		/* nothing that takes a plaintext */
#define SE_CALLS_ARGS	1		/* such calls, plaintext arguments located */
#define SE_CALLS_ALL	2		/* something whose plaintext cannot be located */

/* What a name followed by "(" is (se_redact_catalog_call). */
#define SE_FUNCTION_OTHER	0
#define SE_FUNCTION_TAKES	1	/* a secretenv function taking a plaintext */
#define SE_FUNCTION_UNKNOWN 2	/* a listed wrapper, or the catalog is not read yet */

/* redact.c: what a message's first plaintext sets off (redact_stats.c) */
typedef void (*se_redact_plaintext_callback) (void);

/* redact.c: its settings, the marks of the statement, the verdicts */
extern void se_redact_init(void);
extern void se_redact_on_plaintext(se_redact_plaintext_callback callback);
extern void se_redact_note_plaintext(void);
extern void se_redact_note_yield(void);
extern bool se_redact_enabled(void);
extern int	se_redact_text_verdict(const char *sql);
extern bool se_redact_carries_plaintext(const char *sql);
extern bool se_redact_statement_flagged(void);
extern bool se_redact_statement_yields(void);
extern bool se_redact_xact_marked(void);

/* redact_catalog.c: with secretenv.redact_names */
extern void se_redact_catalog_init(void);
extern void se_redact_catalog_load(void);
extern void se_redact_catalog_load_at_commit(void);
extern bool se_redact_catalog_read(void);
extern int	se_redact_catalog_call(const char *name, uint32 *positions);
extern bool se_redact_catalog_mentions(const char *s, size_t len);
extern bool se_redact_catalog_raiser(const char *name, size_t len);
extern bool se_redact_plaintext_parameter(const char *name);
extern void se_redact_query_calls(Query *query, bool *takes, bool *yields);

/* redact_scrub.c */
extern void se_redact_scrub_in_place(char *sql, size_t len);
extern int	se_redact_scan_calls(char *sql, size_t len, bool scrub, uint64 *params);
extern void se_redact_scrub_statement(char *sql, size_t len);

/* redact_log.c */
extern void se_redact_log_init(void);

/* redact_stats.c: its init also warns of a wrong preload order */
extern void se_redact_stats_init(void);
extern void se_redact_stats_scrub_activity(void);

#endif							/* SECRETENV_REDACT_H */
