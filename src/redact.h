/*-------------------------------------------------------------------------
 *
 * redact.h
 *	  Keeping plaintexts out of every channel that keeps statement text.
 *
 * redact.c decides whether the current statement carries a plaintext (by
 * the names in its text, or because it passed one to secretenv while
 * running); redact_scrub.c overwrites the values in a copy of its text;
 * redact_log.c rewrites its server log records; redact_stats.c hands the
 * scrubbed text to pg_stat_activity and to pg_stat_statements.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRETENV_REDACT_H
#define SECRETENV_REDACT_H

#define SE_REDACTED_MARKER "[secretenv: redacted]"

/* redact.c: the module's init, the mark of a plaintext passed to secretenv, the verdicts */
extern void se_redact_init(void);
extern void se_redact_note_plaintext(void);
extern bool se_redact_enabled(void);
extern bool se_redact_mentions_plaintext(const char *s);
extern bool se_redact_carries_plaintext(const char *sql);
extern bool se_redact_statement_flagged(void);

/* redact_scrub.c */
extern void se_redact_scrub_in_place(char *sql, size_t len);
extern char *se_redact_scrubbed_copy(const char *sql);

/* redact_log.c */
extern void se_redact_log_init(void);

/* redact_stats.c */
extern void se_redact_stats_init(void);
extern void se_redact_stats_plaintext_seen(void);
extern void se_redact_check_preload_order(void);

#endif							/* SECRETENV_REDACT_H */
