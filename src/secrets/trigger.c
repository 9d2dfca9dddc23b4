/*-------------------------------------------------------------------------
 *
 * trigger.c
 *	  Trigger functions: immutable identity columns, envelopes that open,
 *	  cache invalidation.
 *
 * forbid_identity_change() protects the columns a ciphertext's AAD is built
 * from: renaming or re-identifying a row would leave a value that no longer
 * decrypts, so the change is refused whoever makes it.
 *
 * check_envelope() is for application tables built on the primitives: a
 * BEFORE INSERT OR UPDATE row trigger that opens the envelope of the new
 * row (wrapped DEK, then value under the row's id and name) and refuses the
 * row if it does not open or its KEK version is retired, so a row that
 * could never be read back is an error when it is written rather than a
 * loss discovered at the first read.
 * The plaintext goes to a scratch buffer that is wiped before anything
 * else happens, and never leaves the function.
 *
 * invalidate_secret_caches() tells every backend's credential cache about
 * a change of secretenv.secrets: it queues a relcache invalidation of the
 * signal view (coherence.c says why not of the table), which each backend
 * receives (and its relcache callback acts on)
 * once the change commits, and counts the transaction as a writer in flight
 * until then (see writer_counters.c and coherence.c).  It runs as a statement
 * trigger for ordinary writes, and as a BEFORE ROW trigger enabled for
 * replica sessions only, because logical replication apply fires no
 * statement triggers: on a subscriber the row trigger is what invalidates.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "catalog/namespace.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/uuid.h"
#include "utils/datum.h"
#include "utils/inval.h"
#include "utils/rel.h"

#include "cache/coherence.h"
#include "cache/writer_counters.h"
#include "crypto/se_crypto.h"
#include "keys/crypto_errors.h"
#include "keys/kek_retirement.h"
#include "keys/key_health.h"
#include "keys/keyring.h"
#include "se_messages.h"
#include "secrets/envelope_sql.h"

static bool
column_unchanged(HeapTuple oldtuple, HeapTuple newtuple, TupleDesc desc, int attnum)
{
	Form_pg_attribute att = TupleDescAttr(desc, attnum - 1);
	bool		oldnull;
	bool		newnull;
	Datum		oldval = heap_getattr(oldtuple, attnum, desc, &oldnull);
	Datum		newval = heap_getattr(newtuple, attnum, desc, &newnull);

	if (oldnull || newnull)
		return oldnull == newnull;
	if (att->attlen == -1)
	{
		/* Compare contents, not representations (toasted or not). */
		struct varlena *o = PG_DETOAST_DATUM_PACKED(oldval);
		struct varlena *n = PG_DETOAST_DATUM_PACKED(newval);

		return VARSIZE_ANY_EXHDR(o) == VARSIZE_ANY_EXHDR(n) &&
			memcmp(VARDATA_ANY(o), VARDATA_ANY(n), VARSIZE_ANY_EXHDR(o)) == 0;
	}
	return datumIsEqual(oldval, newval, att->attbyval, att->attlen);
}

/*
 * The trigger data of a call: an ERROR unless the trigger manager made it
 * (the function was called directly).
 */
static TriggerData *
trigger_call_data(FunctionCallInfo fcinfo, const char *funcname)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("%s() was not called by the trigger manager", funcname)));
	return (TriggerData *) fcinfo->context;
}

/* Attribute number of a trigger argument's column; an ERROR if absent. */
static int
trigger_column(TriggerData *trigdata, const char *column)
{
	int			attnum = SPI_fnumber(RelationGetDescr(trigdata->tg_relation), column);

	if (attnum <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of relation \"%s\" does not exist",
						column, RelationGetRelationName(trigdata->tg_relation))));
	return attnum;
}

/* Refuse any UPDATE that changes one of the columns named in the arguments. */
PG_FUNCTION_INFO_V1(secret_forbid_identity_change);
Datum
secret_forbid_identity_change(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata;
	Trigger    *trigger;
	TupleDesc	desc;

	trigdata = trigger_call_data(fcinfo, "forbid_identity_change");
	if (!TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!TRIGGER_FIRED_BEFORE(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("forbid_identity_change() must be a BEFORE UPDATE ... FOR EACH ROW trigger")));

	trigger = trigdata->tg_trigger;
	if (trigger->tgnargs < 1)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("forbid_identity_change() needs the names of the columns to protect"),
				 errhint("Pass them as trigger arguments, e.g. EXECUTE FUNCTION secretenv.forbid_identity_change('id', 'name').")));

	desc = RelationGetDescr(trigdata->tg_relation);
	for (int i = 0; i < trigger->tgnargs; i++)
	{
		const char *column = trigger->tgargs[i];
		int			attnum = trigger_column(trigdata, column);

		if (!column_unchanged(trigdata->tg_trigtuple, trigdata->tg_newtuple, desc, attnum))
			ereport(ERROR,
					(errcode(ERRCODE_SECRETENV_IDENTITY_CHANGE),
					 errmsg("column \"%s\" of relation \"%s\" cannot be changed",
							column, RelationGetRelationName(trigdata->tg_relation)),
					 errdetail("It is part of the AAD that binds the encrypted value to its row."),
					 errhint("Create a new secret under the new identity and delete the old one.")));
	}
	return PointerGetDatum(trigdata->tg_newtuple);
}

/* OID of the type secretenv.envelope. */
static Oid
envelope_type_oid(void)
{
	return GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid, CStringGetDatum("envelope"),
						   ObjectIdGetDatum(get_namespace_oid("secretenv", false)));
}

/* A column's value as text bytes, for the AAD: uuid canonical, text as is. */
static void
aad_part(TriggerData *trigdata, int attnum, Datum value, bool allow_uuid,
		 char *uuidbuf, const char **out, int *outlen)
{
	Form_pg_attribute att = TupleDescAttr(RelationGetDescr(trigdata->tg_relation), attnum - 1);
	Oid			type = getBaseType(att->atttypid);

	if (allow_uuid && type == UUIDOID)
	{
		se_uuid_to_text(DatumGetUUIDP(value), uuidbuf);
		*out = uuidbuf;
		*outlen = UUID_TEXT_LEN;
	}
	else if (type == TEXTOID || type == VARCHAROID)
	{
		text	   *t = DatumGetTextPP(value);

		*out = VARDATA_ANY(t);
		*outlen = VARSIZE_ANY_EXHDR(t);
	}
	else
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("column \"%s\" of relation \"%s\" has type %s",
						NameStr(att->attname), RelationGetRelationName(trigdata->tg_relation),
						format_type_be(att->atttypid)),
				 errdetail(allow_uuid ? "A secret id column must be uuid, text or varchar."
						   : "A secret name column must be text or varchar.")));
}

static bytea *
bytea_column(TriggerData *trigdata, int attnum, Datum value)
{
	Form_pg_attribute att = TupleDescAttr(RelationGetDescr(trigdata->tg_relation), attnum - 1);

	if (getBaseType(att->atttypid) != BYTEAOID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("column \"%s\" of relation \"%s\" has type %s",
						NameStr(att->attname), RelationGetRelationName(trigdata->tg_relation),
						format_type_be(att->atttypid)),
				 errdetail("An encrypted value or wrapped DEK column must be bytea.")));
	return DatumGetByteaPP(value);
}

/*
 * Refuse a new or changed row whose envelope does not open.
 *
 * Arguments: encrypted_value, wrapped_dek, kek_version, id and name columns
 * (five), or an envelope column, id and name (three).  A row with NULL in
 * any of them has no envelope to open and is accepted; declare the columns
 * NOT NULL to forbid that.  An UPDATE that leaves all of them unchanged is
 * not re-checked: the row was checked when they were written, and re-opening
 * it would make unrelated updates fail while a KEK is missing.
 */
PG_FUNCTION_INFO_V1(secret_check_envelope);
Datum
secret_check_envelope(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata;
	Trigger    *trigger;
	HeapTuple	newtuple;
	TupleDesc	desc;
	int			attnums[5];
	int			nattrs;
	Datum		values[5];
	bool		isnull;
	bytea	   *value;
	bytea	   *wrapped;
	int32		version;
	char		idbuf[UUID_TEXT_LEN];
	const char *id;
	int			idlen;
	const char *name;
	int			namelen;
	se_status	status;
	bool		utf8_ok;
	const char *relname;

	trigdata = trigger_call_data(fcinfo, "check_envelope");
	if (!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!(TRIGGER_FIRED_BY_INSERT(trigdata->tg_event) || TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event)))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("check_envelope() must be a BEFORE INSERT OR UPDATE ... FOR EACH ROW trigger")));

	trigger = trigdata->tg_trigger;
	if (trigger->tgnargs != 5 && trigger->tgnargs != 3)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("check_envelope() needs the names of the envelope, id and name columns"),
				 errhint("Pass five column names (encrypted value, wrapped DEK, KEK version, id, name) or three (envelope, id, name), e.g. EXECUTE FUNCTION secretenv.check_envelope('encrypted_value', 'wrapped_dek', 'kek_version', 'id', 'name').")));

	newtuple = TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ? trigdata->tg_newtuple
		: trigdata->tg_trigtuple;
	desc = RelationGetDescr(trigdata->tg_relation);
	relname = RelationGetRelationName(trigdata->tg_relation);
	nattrs = trigger->tgnargs;
	for (int i = 0; i < nattrs; i++)
		attnums[i] = trigger_column(trigdata, trigger->tgargs[i]);

	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
	{
		bool		changed = false;

		for (int i = 0; i < nattrs && !changed; i++)
			changed = !column_unchanged(trigdata->tg_trigtuple, newtuple, desc, attnums[i]);
		if (!changed)
			return PointerGetDatum(newtuple);
	}

	for (int i = 0; i < nattrs; i++)
	{
		values[i] = heap_getattr(newtuple, attnums[i], desc, &isnull);
		if (isnull)
			return PointerGetDatum(newtuple);
	}

	if (nattrs == 5)
	{
		Form_pg_attribute att = TupleDescAttr(desc, attnums[2] - 1);

		if (getBaseType(att->atttypid) != INT4OID)
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("column \"%s\" of relation \"%s\" has type %s",
							NameStr(att->attname), relname, format_type_be(att->atttypid)),
					 errdetail("A KEK version column must be int4.")));
		value = bytea_column(trigdata, attnums[0], values[0]);
		wrapped = bytea_column(trigdata, attnums[1], values[1]);
		version = DatumGetInt32(values[2]);
		aad_part(trigdata, attnums[3], values[3], true, idbuf, &id, &idlen);
		aad_part(trigdata, attnums[4], values[4], false, NULL, &name, &namelen);
	}
	else
	{
		Form_pg_attribute att = TupleDescAttr(desc, attnums[0] - 1);
		HeapTupleHeader env;
		bool		fieldnull[3];
		Datum		fields[3];

		if (att->atttypid != envelope_type_oid())
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("column \"%s\" of relation \"%s\" has type %s",
							NameStr(att->attname), relname, format_type_be(att->atttypid)),
					 errdetail("With three arguments the first column must be secretenv.envelope.")));
		env = DatumGetHeapTupleHeader(values[0]);
		for (int i = 0; i < 3; i++)
		{
			fields[i] = GetAttributeByNum(env, i + 1, &fieldnull[i]);
			if (fieldnull[i])
				return PointerGetDatum(newtuple);
		}
		value = DatumGetByteaPP(fields[0]);
		wrapped = DatumGetByteaPP(fields[1]);
		version = DatumGetInt32(fields[2]);
		aad_part(trigdata, attnums[1], values[1], true, idbuf, &id, &idlen);
		aad_part(trigdata, attnums[2], values[2], false, NULL, &name, &namelen);
	}

	se_check_version_argument(version);

	/*
	 * A row of a retired KEK version could not be read: refuse it at write
	 * time, as reads do (an unchanged envelope was returned above).
	 */
	if (se_kek_version_retired(version))
		ereport(ERROR,
				(errcode(ERRCODE_SECRETENV_KEK_RETIRED),
				 errmsg("new row of relation \"%s\" holds an envelope of retired KEK version %d", relname, version),
				 errdetail("secretenv.min_kek_version is %d; rows wrapped under an older KEK are no longer read.",
						   se_min_kek_version()),
				 errhint("Encrypt the value again with secretenv.secret_encrypt, which wraps under the current KEK.")));
	status = se_envelope_check((const uint8_t *) VARDATA_ANY(value), VARSIZE_ANY_EXHDR(value),
							   (const uint8_t *) VARDATA_ANY(wrapped), VARSIZE_ANY_EXHDR(wrapped),
							   version, id, idlen, name, namelen, &utf8_ok);

	switch (status)
	{
		case SE_OK:
			if (!utf8_ok)
				ereport(ERROR,
						(errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
						 errmsg("new row of relation \"%s\" holds a value that is not valid UTF-8 text", relname)));
			break;
		case SE_ERR_LENGTH:
			ereport(ERROR,
					(errcode(ERRCODE_SECRETENV_MALFORMED_ENVELOPE),
					 errmsg("new row of relation \"%s\" holds a malformed envelope", relname),
					 se_errdetail_malformed_envelope()));
			break;
		case SE_ERR_UNWRAP:
			ereport(ERROR,
					(errcode(ERRCODE_SECRETENV_KEK_MISMATCH),
					 errmsg("new row of relation \"%s\" holds an envelope that does not open: wrong KEK or corrupted wrapped DEK", relname),
					 se_errdetail_kek_mismatch(version),
					 errhint("Store the encrypted value, wrapped DEK and KEK version of one secret_encrypt call: ... FROM src, LATERAL secretenv.secret_encrypt(value, id, name) e.")));
			break;
		case SE_ERR_OPEN:
			ereport(ERROR,
					(errcode(ERRCODE_SECRETENV_VALUE_MISMATCH),
					 errmsg("new row of relation \"%s\" holds an envelope that does not open: AAD mismatch or tampered value", relname),
					 errdetail("The encrypted value does not open under its DEK with this row's id and name."),
					 errhint("Store the encrypted value, wrapped DEK and KEK version of one secret_encrypt call made with this row's id and name.")));
			break;
		default:
			se_report_crypto_failure(status, version, "check envelope");
	}
	return PointerGetDatum(newtuple);
}

/*
 * Queue a relcache invalidation of the signal so every backend drops its
 * cached secrets; as a row trigger, let the row through unchanged.
 */
PG_FUNCTION_INFO_V1(secret_invalidate_caches);
Datum
secret_invalidate_caches(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata;
	Oid			signal;

	trigdata = trigger_call_data(fcinfo, "invalidate_secret_caches");
	se_writer_started();
	se_key_health_table_changed();
	signal = se_cache_signal_relid();
	CacheInvalidateRelcacheByRelid(OidIsValid(signal) ? signal :
								   RelationGetRelid(trigdata->tg_relation));
	if (TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		return PointerGetDatum(TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ?
							   trigdata->tg_newtuple : trigdata->tg_trigtuple);
	return PointerGetDatum(NULL);
}
