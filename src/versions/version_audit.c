/*-------------------------------------------------------------------------
 *
 * version_audit.c
 *	  Access audit records of the version operations: stage, promote and
 *	  rollback.
 *
 * A stage inserts a pending row into secretenv.secret_versions; the row
 * trigger below records it, with its version.  A promote or rollback is
 * an UPDATE of secretenv.secrets like secret_update's, so the store's write
 * trigger (audit_sql.c) would record it as an update: the trigger that
 * moves the version into the row (secretenv.keep_versions, SECURITY
 * DEFINER, not executable by any role but the owner) first notes which
 * operation it is, and the write trigger takes that note for its record.
 * The note lives until it is taken or the transaction ends.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/rel.h"
#include "utils/uuid.h"

#include "audit/audit.h"
#include "se_messages.h"
#include "versions/versions.h"

static int	noted_op = -1;
static bool callback_registered = false;

static void
forget_note(XactEvent event, void *arg)
{
	noted_op = -1;
}

/* Name the operation of the next value change's audit record (promote, rollback). */
PG_FUNCTION_INFO_V1(secret_note_version_operation);
Datum
secret_note_version_operation(PG_FUNCTION_ARGS)
{
	char	   *op = text_to_cstring(PG_GETARG_TEXT_PP(0));

	if (strcmp(op, "promote") == 0)
		noted_op = SE_AUDIT_PROMOTE;
	else if (strcmp(op, "rollback") == 0)
		noted_op = SE_AUDIT_ROLLBACK;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unrecognized version operation \"%s\"", op)));
	if (!callback_registered)
	{
		RegisterXactCallback(forget_note, NULL);
		callback_registered = true;
	}
	PG_RETURN_VOID();
}

/* The noted operation, once; otherwise the one given. */
SeAuditOp
se_versions_take_noted_operation(SeAuditOp otherwise)
{
	SeAuditOp	op = noted_op >= 0 ? (SeAuditOp) noted_op : otherwise;

	noted_op = -1;
	return op;
}

static Datum
column(TriggerData *trigdata, const char *name, bool *isnull)
{
	int			attnum = SPI_fnumber(RelationGetDescr(trigdata->tg_relation), name);

	if (attnum <= 0)
	{
		*isnull = true;
		return (Datum) 0;
	}
	return heap_getattr(trigdata->tg_trigtuple, attnum,
						RelationGetDescr(trigdata->tg_relation), isnull);
}

/*
 * AFTER INSERT FOR EACH ROW on secretenv.secret_versions: a pending
 * version is a stage.  The other inserts (the old current value kept by
 * secretenv.keep_versions) belong to an update, promote or rollback that
 * the store's own trigger records.
 */
PG_FUNCTION_INFO_V1(secret_audit_version_write);
Datum
secret_audit_version_write(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	SeAuditRecord rec;
	bool		isnull;
	Datum		state;
	Datum		id;
	Datum		name;
	Datum		version;
	text	   *n;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("audit_version_write() must be an AFTER INSERT ... FOR EACH ROW trigger")));

	state = column(trigdata, "state", &isnull);
	if (isnull || strcmp(TextDatumGetCString(state), "pending") != 0)
		return PointerGetDatum(NULL);
	id = column(trigdata, "secret_id", &isnull);
	if (isnull)
		return PointerGetDatum(NULL);
	name = column(trigdata, "secret_name", &isnull);
	if (isnull)
		return PointerGetDatum(NULL);
	n = DatumGetTextPP(name);
	if (se_audit_prepare(&rec, SE_AUDIT_STAGE, SE_VIA_TABLE, DatumGetUUIDP(id)->data,
						 VARDATA_ANY(n), VARSIZE_ANY_EXHDR(n)))
	{
		version = column(trigdata, "version", &isnull);
		rec.version = isnull ? 0 : DatumGetInt32(version);
		se_audit_emit(&rec, SE_AUDIT_OK, false);
	}
	return PointerGetDatum(NULL);
}
