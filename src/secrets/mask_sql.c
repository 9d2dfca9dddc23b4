/*-------------------------------------------------------------------------
 *
 * mask_sql.c
 *	  secret_mask(text) and secret_mask(jsonb): display forms of secrets.
 *
 * The mask keeps the first 3 and last 4 characters (code points, not
 * bytes) of values of at least 8 characters, and is "***" otherwise; the
 * counting itself is the core's se_mask_utf8 (the database is UTF8).  An
 * object has each top-level value masked; values that are not strings
 * become "***".  A jsonb that is not an object is masked as one value.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "crypto/se_crypto.h"
#include "pg_compat.h"
#include "redaction/redact.h"
#include "se_messages.h"
#include "secrets/plaintext_wipe.h"

#define HIDDEN_VALUE "***"

static text *
mask_bytes(const char *s, size_t len)
{
	text	   *result = (text *) palloc(VARHDRSZ + se_mask_bound(len));
	size_t		masklen = se_mask_utf8(s, len, VARDATA(result));

	SET_VARSIZE(result, VARHDRSZ + masklen);
	return result;
}

/* The masked jsonb string for one value of a secret object. */
static void
mask_jsonb_value(const JsonbValue *in, JsonbValue *out)
{
	out->type = jbvString;
	if (in->type == jbvString)
	{
		text	   *masked = mask_bytes(in->val.string.val, in->val.string.len);

		out->val.string.val = VARDATA(masked);
		out->val.string.len = VARSIZE(masked) - VARHDRSZ;
	}
	else
	{
		out->val.string.val = HIDDEN_VALUE;
		out->val.string.len = strlen(HIDDEN_VALUE);
	}
}

/* Mask a text secret. */
PG_FUNCTION_INFO_V1(secret_mask_text);
Datum
secret_mask_text(PG_FUNCTION_ARGS)
{
	text	   *value = se_text_arg_scrubbed(fcinfo, 0);

	/* The plaintext has reached secretenv: mark the statement for redaction. */
	se_redact_note_plaintext();

	PG_RETURN_TEXT_P(mask_bytes(VARDATA_ANY(value), VARSIZE_ANY_EXHDR(value)));
}

/* Mask every top-level value of a jsonb secret. */
PG_FUNCTION_INFO_V1(secret_mask_jsonb);
Datum
secret_mask_jsonb(PG_FUNCTION_ARGS)
{
	Jsonb	   *jb = PG_GETARG_JSONB_P(0);
	JsonbPushStateCompat state = JSONB_PUSH_STATE_INIT_COMPAT;
	JsonbIterator *it;
	JsonbIteratorToken token;
	JsonbValue	v;
	JsonbValue	masked;
	JsonbValue *result = NULL;

	/* The plaintext has reached secretenv: mark the statement for redaction. */
	se_redact_note_plaintext();

	if ((Pointer) jb != DatumGetPointer(PG_GETARG_DATUM(0)))
		se_wipe_at_reset(jb, VARSIZE(jb));

	if (!JB_ROOT_IS_OBJECT(jb))
	{
		/* A scalar string is masked like text; arrays and other scalars hide. */
		JsonbValue	scalar = {.type = jbvNull};

		if (JB_ROOT_IS_SCALAR(jb))
			(void) JsonbExtractScalar(&jb->root, &scalar);
		mask_jsonb_value(&scalar, &masked);
		PG_RETURN_JSONB_P(JsonbValueToJsonb(&masked));
	}

	it = JsonbIteratorInit(&jb->root);
	while ((token = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (token == WJB_VALUE)
		{
			mask_jsonb_value(&v, &masked);
			result = pushJsonbValue_compat(&state, token, &masked);
		}
		else
			result = pushJsonbValue_compat(&state, token, token == WJB_KEY ? &v : NULL);
	}
	PG_RETURN_JSONB_P(JsonbValueToJsonb(result));
}
