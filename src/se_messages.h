/*-------------------------------------------------------------------------
 *
 * se_messages.h
 *	  What every message of secretenv's PostgreSQL layer carries: its text
 *	  domain and the SQLSTATEs of secretenv's own failure classes.
 *
 * Each area declares its functions in a header of its own (keyring.h,
 * envelope_sql.h, key_health.h, cache.h, ...); the cryptographic core
 * (src/crypto, se_crypto.h) knows nothing of PostgreSQL.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SE_MESSAGES_H
#define SE_MESSAGES_H

/*
 * Messages raised by secretenv's C code carry their own text domain, which
 * is how the log redaction hook tells them (never secret-bearing) from
 * messages of other code that may quote its input.  As in PL/pgSQL.
 */
#undef TEXTDOMAIN
#define TEXTDOMAIN PG_TEXTDOMAIN("secretenv")

/*
 * SQLSTATEs of secretenv's own failure classes.  They are implementation-
 * defined subclasses (letters S..) of the standard classes, so handlers for
 * data_exception (22) or integrity_constraint_violation (23) catch them.
 */
#define ERRCODE_SECRETENV_MALFORMED_ENVELOPE	MAKE_SQLSTATE('2','2','S','0','1')
#define ERRCODE_SECRETENV_KEK_MISMATCH			MAKE_SQLSTATE('2','2','S','0','2')
#define ERRCODE_SECRETENV_VALUE_MISMATCH		MAKE_SQLSTATE('2','2','S','0','3')
#define ERRCODE_SECRETENV_KEK_NOT_CONFIGURED	MAKE_SQLSTATE('2','2','S','0','4')
#define ERRCODE_SECRETENV_KEK_RETIRED			MAKE_SQLSTATE('2','2','S','0','5')
#define ERRCODE_SECRETENV_IDENTITY_CHANGE		MAKE_SQLSTATE('2','3','S','0','1')
/* access rules exist but the row-level security that enforces them was lost */
#define ERRCODE_SECRETENV_ACCESS_NOT_ENFORCED	MAKE_SQLSTATE('5','5','S','0','1')
/* secretenv.audit_strict: a read whose audit record cannot be made durable */
#define ERRCODE_SECRETENV_AUDIT_UNAVAILABLE		MAKE_SQLSTATE('5','5','S','0','2')

/*
 * Secret versions (DESIGN section 8c).  Raised by the store's SQL
 * functions (RAISE ... USING ERRCODE = '55S0n'), listed here with the
 * others; class 55, object not in prerequisite state: retrying the same
 * call cannot succeed until the secret's state changes.
 */
/* secret_update(..., expected_version => n) when the current version is not n */
#define ERRCODE_SECRETENV_VERSION_CONFLICT		MAKE_SQLSTATE('5','5','S','0','3')
/* secret_create of a name that is deleted but not destroyed */
#define ERRCODE_SECRETENV_SECRET_DELETED		MAKE_SQLSTATE('5','5','S','0','4')
/* secret_promote of a secret without a pending version */
#define ERRCODE_SECRETENV_NO_PENDING_VERSION	MAKE_SQLSTATE('5','5','S','0','5')

#endif							/* SE_MESSAGES_H */
