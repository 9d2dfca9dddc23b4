/*-------------------------------------------------------------------------
 *
 * crypto_errors.h
 *	  Map the cryptographic core's status codes to PostgreSQL errors.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRETENV_CRYPTO_ERRORS_H
#define SECRETENV_CRYPTO_ERRORS_H

#include "crypto/se_crypto.h"
#include "pg_compat.h"

/* crypto_errors.c: ereport after the caller cleaned up; never returns */
pg_noreturn extern void se_report_crypto_failure(se_status status, int32 kek_version,
												 const char *what);
extern void se_check_version_argument(int32 version);

/* crypto_errors.c: the DETAILs every report of a bad envelope shares */
extern int	se_errdetail_malformed_envelope(void);
extern int	se_errdetail_kek_mismatch(int32 kek_version);

#endif							/* SECRETENV_CRYPTO_ERRORS_H */
