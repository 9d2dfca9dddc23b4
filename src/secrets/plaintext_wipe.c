/*-------------------------------------------------------------------------
 *
 * plaintext_wipe.c
 *	  Wipe plaintext buffers when their memory context goes away.
 *
 * A palloc'd copy of a secret (a detoasted argument, a serialized jsonb)
 * must be wiped even when an ERROR unwinds past the code that made it.
 * Rather than a PG_TRY in every caller, the copy is registered with a reset
 * callback of the memory context that owns it: PostgreSQL runs the callback
 * before that context's memory is released, on success and on error alike.
 * A registered buffer must therefore never be pfree'd by hand.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/memutils.h"

#include "crypto/se_crypto.h"
#include "pg_compat.h"
#include "se_messages.h"
#include "secrets/plaintext_wipe.h"

typedef struct WipeRequest
{
	MemoryContextCallback callback;
	void	   *ptr;
	size_t		len;
} WipeRequest;

static void
wipe_request(void *arg)
{
	WipeRequest *request = (WipeRequest *) arg;

	se_wipe(request->ptr, request->len);
}

void
se_wipe_at_reset(void *ptr, size_t len)
{
	MemoryContext owner = GetMemoryChunkContext(ptr);
	WipeRequest *request = MemoryContextAlloc(owner, sizeof(WipeRequest));

	request->ptr = ptr;
	request->len = len;
	request->callback.func = wipe_request;
	request->callback.arg = request;
	MemoryContextRegisterResetCallback(owner, &request->callback);
}

text *
se_text_arg_scrubbed(FunctionCallInfo fcinfo, int argno)
{
	Datum		raw = PG_GETARG_DATUM(argno);
	text	   *value = PG_GETARG_TEXT_PP(argno);

	/* Detoasting made a copy: the plaintext now exists twice. */
	if ((Pointer) value != DatumGetPointer(raw))
		se_wipe_at_reset(value, VARSIZE_ANY(value));
	return value;
}
