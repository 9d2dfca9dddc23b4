/*-------------------------------------------------------------------------
 *
 * encryption_time.c
 *	  When the value of a stored secret was last encrypted, recorded where
 *	  only secretenv writes it.
 *
 * secret_reencrypt(since) must give a fresh DEK to every row whose DEK
 * could have been exposed before `since`.  It cannot trust a column that
 * a writer sets (last_updated_at): a writer who sets it to 2099 would keep
 * a compromised DEK out of every re-encryption.  So secretenv.secrets has a
 * column value_encrypted_at that the row trigger below maintains from what
 * only this backend knows, whatever the statement put in it:
 *
 *	- every envelope this backend seals under a fresh DEK (secret_encrypt,
 *	  secret_create, secret_update, re-encryption: se_seal_envelope_row) is
 *	  noted for the rest of the transaction by its wrapped DEK, which is
 *	  unique to that DEK and nonce;
 *	- a new or changed row whose wrapped DEK is one of them gets now();
 *	- an UPDATE that leaves encrypted_value unchanged (rotation re-wraps
 *	  the same DEK; a change of description) keeps the old time;
 *	- any other envelope (written directly, e.g. by MLflow, copied from
 *	  another row, sealed in another transaction or by a parallel worker)
 *	  gets NULL: the time is unknown, and secret_reencrypt treats it as
 *	  older than any cutoff.  A writer who knows a compromised DEK could
 *	  otherwise seal a new value under it, with the old wrapped DEK, and
 *	  have the row stamped as fresh.
 *	- the exception: an INSERT by a role that may TRUNCATE the table (its
 *	  owner, superusers, who can rewrite or empty the table anyway and are
 *	  exempt from check_envelope for the same reason) keeps the time it
 *	  writes, so a restored dump keeps its times.
 *
 * The noted wrapped DEKs are ciphertext, no secret; they live in
 * TopTransactionContext and go with it.  A row that stores one takes it out
 * of the set (storing the same envelope again in the transaction counts as
 * unknown), so an INSERT ... SELECT of any size keeps the set small; at
 * most MAX_FRESH envelopes sealed and not yet stored are remembered, and
 * beyond that a stored envelope counts as unknown: re-encrypted once more
 * than needed, never skipped.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/acl.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "crypto/se_crypto.h"
#include "pg_compat.h"
#include "se_messages.h"
#include "secrets/encryption_time.h"

typedef struct FreshEnvelope
{
	uint8_t		wrapped[SE_WRAPPED_DEK_LEN];	/* the hash key */
} FreshEnvelope;

#define MAX_FRESH 65536

/* The wrapped DEKs sealed in this transaction, and which transaction. */
static HTAB *fresh_envelopes = NULL;
static LocalTransactionId fresh_lxid = InvalidLocalTransactionId;

/* The set of the current transaction, or NULL if it has noted nothing. */
static HTAB *
current_set(bool create)
{
	if (fresh_envelopes != NULL && fresh_lxid == proc_lxid_compat(MyProc))
		return fresh_envelopes;
	/* An older transaction's set went with its TopTransactionContext. */
	fresh_envelopes = NULL;
	if (create)
	{
		HASHCTL		ctl;

		ctl.keysize = SE_WRAPPED_DEK_LEN;
		ctl.entrysize = sizeof(FreshEnvelope);
		ctl.hcxt = TopTransactionContext;
		fresh_envelopes = hash_create("secretenv fresh envelopes", 64, &ctl,
									  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		fresh_lxid = proc_lxid_compat(MyProc);
	}
	return fresh_envelopes;
}

void
se_note_fresh_envelope(const uint8_t *wrapped)
{
	HTAB	   *set = current_set(true);

	if (hash_get_num_entries(set) < MAX_FRESH)
		(void) hash_search(set, wrapped, HASH_ENTER, NULL);
}

/*
 * Whether this backend sealed the wrapped DEK under a fresh DEK in this
 * transaction and no row has stored it yet; it is taken out of the set.
 */
static bool
take_sealed_here(bytea *wrapped)
{
	HTAB	   *set = current_set(false);

	if (set == NULL || VARSIZE_ANY_EXHDR(wrapped) != SE_WRAPPED_DEK_LEN)
		return false;
	return hash_search(set, VARDATA_ANY(wrapped), HASH_REMOVE, NULL) != NULL;
}

static int
column_of(Relation rel, const char *name)
{
	int			attnum = SPI_fnumber(RelationGetDescr(rel), name);

	if (attnum <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of relation \"%s\" does not exist",
						name, RelationGetRelationName(rel))));
	return attnum;
}

static bool
bytea_equal(Datum a, Datum b)
{
	bytea	   *x = DatumGetByteaPP(a);
	bytea	   *y = DatumGetByteaPP(b);

	return VARSIZE_ANY_EXHDR(x) == VARSIZE_ANY_EXHDR(y) &&
		memcmp(VARDATA_ANY(x), VARDATA_ANY(y), VARSIZE_ANY_EXHDR(x)) == 0;
}

/*
 * BEFORE INSERT OR UPDATE row trigger of secretenv.secrets: set
 * value_encrypted_at as the header comment says.
 */
PG_FUNCTION_INFO_V1(secret_stamp_value_encrypted);
Datum
secret_stamp_value_encrypted(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Relation	rel;
	TupleDesc	desc;
	HeapTuple	newtuple;
	int			cols[1];
	Datum		stamp[1] = {(Datum) 0};
	bool		stampnull[1] = {true};
	int			value_att;
	Datum		value;
	Datum		wrapped;
	bool		valuenull;
	bool		wrappednull;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!(TRIGGER_FIRED_BY_INSERT(trigdata->tg_event) || TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event)))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("stamp_value_encrypted() must be a BEFORE INSERT OR UPDATE ... FOR EACH ROW trigger")));

	rel = trigdata->tg_relation;
	desc = RelationGetDescr(rel);
	newtuple = TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ? trigdata->tg_newtuple
		: trigdata->tg_trigtuple;
	value_att = column_of(rel, "encrypted_value");
	cols[0] = column_of(rel, "value_encrypted_at");

	value = heap_getattr(newtuple, value_att, desc, &valuenull);
	wrapped = heap_getattr(newtuple, column_of(rel, "wrapped_dek"), desc, &wrappednull);
	if (!valuenull && !wrappednull && take_sealed_here(DatumGetByteaPP(wrapped)))
	{
		stamp[0] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
		stampnull[0] = false;
	}
	else if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
	{
		bool		oldnull;
		Datum		oldvalue = heap_getattr(trigdata->tg_trigtuple, value_att, desc, &oldnull);

		/* The same ciphertext opens only under the same DEK: same time. */
		if (!valuenull && !oldnull && bytea_equal(oldvalue, value))
			stamp[0] = heap_getattr(trigdata->tg_trigtuple, cols[0], desc, &stampnull[0]);
	}
	else if (pg_class_aclcheck(RelationGetRelid(rel), GetUserId(), ACL_TRUNCATE) == ACLCHECK_OK)
		stamp[0] = heap_getattr(newtuple, cols[0], desc, &stampnull[0]);

	return PointerGetDatum(heap_modify_tuple_by_cols(newtuple, desc, 1, cols, stamp, stampnull));
}
