/*-------------------------------------------------------------------------
 *
 * trigger.c
 *	  Trigger functions: immutable identity columns, cache invalidation.
 *
 * forbid_identity_change() protects the columns a ciphertext's AAD is built
 * from: renaming or re-identifying a row would leave a value that no longer
 * decrypts, so the change is refused whoever makes it.
 *
 * invalidate_secret_caches() tells every backend's credential cache about
 * a change of secretenv.secrets: it queues a relcache invalidation of the
 * table, which each backend receives (and its relcache callback acts on)
 * once the change commits, and counts the transaction as a writer in flight
 * until then (see writers.c and coherence.c).  It runs as a statement
 * trigger for ordinary writes, and as a BEFORE ROW trigger enabled for
 * replica sessions only, because logical replication apply fires no
 * statement triggers: on a subscriber the row trigger is what invalidates.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "utils/datum.h"
#include "utils/inval.h"
#include "utils/rel.h"

#include "secretenv.h"

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

/* Refuse any UPDATE that changes one of the columns named in the arguments. */
PG_FUNCTION_INFO_V1(secret_forbid_identity_change);
Datum
secret_forbid_identity_change(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Trigger    *trigger;
	TupleDesc	desc;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("forbid_identity_change() was not called by the trigger manager")));
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
		int			attnum = SPI_fnumber(desc, column);

		if (attnum <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("column \"%s\" of relation \"%s\" does not exist",
							column, RelationGetRelationName(trigdata->tg_relation))));
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

/*
 * Queue a relcache invalidation so every backend drops its cached secrets;
 * as a row trigger, let the row through unchanged.
 */
PG_FUNCTION_INFO_V1(secret_invalidate_caches);
Datum
secret_invalidate_caches(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("invalidate_secret_caches() was not called by the trigger manager")));
	se_writer_started();
	CacheInvalidateRelcacheByRelid(RelationGetRelid(trigdata->tg_relation));
	if (TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		return PointerGetDatum(TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ?
							   trigdata->tg_newtuple : trigdata->tg_trigtuple);
	return PointerGetDatum(NULL);
}
