/*-------------------------------------------------------------------------
 *
 * envelope_memo.h
 *	  One envelope for the per-column calls of (secret_encrypt(...)).*.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRETENV_ENVELOPE_MEMO_H
#define SECRETENV_ENVELOPE_MEMO_H

#include "fmgr.h"

/* envelope_memo.c: the columns of one secret_encrypt(...).* agree */
typedef struct SeEncryptArgs
{
	const char *value;
	size_t		valuelen;
	const char *id;
	int			idlen;
	const char *name;
	int			namelen;
} SeEncryptArgs;
extern bool se_memo_fetch(FunctionCallInfo fcinfo, const SeEncryptArgs *args,
						  Datum *envelope);
extern void se_memo_store(FunctionCallInfo fcinfo, const SeEncryptArgs *args,
						  Datum envelope);

#endif							/* SECRETENV_ENVELOPE_MEMO_H */
