/*-------------------------------------------------------------------------
 *
 * audit_sql.c
 *	  The SQL face of the access audit: audit_verify(), audit_purge(),
 *	  audit_stats(), the table's guard trigger, the store's write trigger,
 *	  decrypt_stored() (decrypted_secrets' read of a stored row) and the
 *	  executor hooks that record refused and failed writes.
 *
 * audit_verify() walks secretenv.audit_log in sequence order and reports
 * the first break: a missing sequence number (a deleted record), a MAC
 * that does not match (an altered, inserted or reordered record), a MAC
 * under a KEK version that is not configured, records before the first
 * one that no purge checkpoint accounts for, or records after the last
 * one that this server's writer is known to have chained (tail deleted).
 * A chain that has been purged starts at seq P+1, and its predecessor's
 * MAC is the anchor_mac of the purge checkpoint whose purged_through is P;
 * that checkpoint is itself a chained record further on, so the anchor is
 * authenticated when the walk reaches it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/parallel.h"
#include "access/table.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "parser/parsetree.h"
#include "utils/builtins.h"
#include "utils/catcache.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "audit/audit.h"
#include "cache/coherence.h"
#include "keys/keyring.h"
#include "pg_compat.h"
#include "se_messages.h"
#include "secrets/envelope_sql.h"
#include "versions/versions.h"

/* Set while audit_purge() deletes: the guard trigger lets exactly that through. */
static bool purging = false;

/* The write trigger recorded a write during the watched statement (below). */
static bool watched_wrote = false;

/* ---------- reads and writes of the store ---------- */

/*
 * decrypted_secrets' value column: secret_decrypt of a stored row, with
 * its audit record.  PARALLEL RESTRICTED, so every record carries the
 * leader's client; a view of a 1.0 or 1.1 database still calls
 * secret_decrypt and is audited once its extension is updated.  The
 * sixth argument, the row's current_version, goes into the record; the
 * five-argument form (a 1.2 development install) records none.
 */
PG_FUNCTION_INFO_V1(secret_decrypt_stored);
Datum
secret_decrypt_stored(PG_FUNCTION_ARGS)
{
	bytea	   *value = PG_GETARG_BYTEA_PP(0);
	bytea	   *wrapped = PG_GETARG_BYTEA_PP(1);
	int32		version = PG_GETARG_INT32(2);
	pg_uuid_t  *id = PG_GETARG_UUID_P(3);
	text	   *name = PG_GETARG_TEXT_PP(4);
	char		idtext[UUID_TEXT_LEN];
	SeAuditRecord rec;
	bool		recorded;
	text	   *result = NULL;

	recorded = se_audit_prepare(&rec, SE_AUDIT_READ, SE_VIA_VIEW, id->data,
								VARDATA_ANY(name), VARSIZE_ANY_EXHDR(name));
	if (recorded && PG_NARGS() > 5)
		rec.version = PG_GETARG_INT32(5);
	se_uuid_to_text(id, idtext);
	PG_TRY();
	{
		result = se_decrypt_to_text((const uint8_t *) VARDATA_ANY(value), VARSIZE_ANY_EXHDR(value),
									(const uint8_t *) VARDATA_ANY(wrapped), VARSIZE_ANY_EXHDR(wrapped),
									version, idtext, UUID_TEXT_LEN,
									VARDATA_ANY(name), VARSIZE_ANY_EXHDR(name));
	}
	PG_CATCH();
	{
		if (recorded)
			se_audit_emit(&rec, SE_AUDIT_FAILED, false);
		PG_RE_THROW();
	}
	PG_END_TRY();
	if (recorded)
		se_audit_emit(&rec, SE_AUDIT_OK, true);
	PG_RETURN_TEXT_P(result);
}

/* Column value of the trigger's tuple, or NULL. */
static Datum
tuple_column(Relation rel, HeapTuple tuple, const char *column, bool *isnull)
{
	int			attnum = SPI_fnumber(RelationGetDescr(rel), column);

	if (attnum <= 0)
	{
		*isnull = true;
		return (Datum) 0;
	}
	return heap_getattr(tuple, attnum, RelationGetDescr(rel), isnull);
}

/*
 * AFTER INSERT OR UPDATE OR DELETE FOR EACH ROW on secretenv.secrets:
 * create, update (a new value; a rotation that only re-wraps the DEK is
 * not an operation on the secret) and delete.  A write whose transaction
 * later rolls back stays recorded: it was attempted.
 */
PG_FUNCTION_INFO_V1(audit_secret_write);
Datum
audit_secret_write(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	HeapTuple	tuple;
	SeAuditOp	op;
	SeAuditRecord rec;
	bool		isnull;
	Datum		id;
	Datum		name;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("audit_secret_write() must be an AFTER ... FOR EACH ROW trigger")));

	if (TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
	{
		op = SE_AUDIT_CREATE;
		tuple = trigdata->tg_trigtuple;
	}
	else if (TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
	{
		/* With deletion marks (1.2), deleting the row destroys the secret. */
		op = SPI_fnumber(RelationGetDescr(trigdata->tg_relation), "deleted_at") > 0 ?
			SE_AUDIT_DESTROY : SE_AUDIT_DELETE;
		tuple = trigdata->tg_trigtuple;
	}
	else
	{
		bool		oldnull;
		bool		newnull;
		Datum		oldv = tuple_column(trigdata->tg_relation, trigdata->tg_trigtuple,
										"encrypted_value", &oldnull);
		Datum		newv = tuple_column(trigdata->tg_relation, trigdata->tg_newtuple,
										"encrypted_value", &newnull);
		bool		olddeleted;
		bool		newdeleted;

		(void) tuple_column(trigdata->tg_relation, trigdata->tg_trigtuple,
							"deleted_at", &olddeleted);
		(void) tuple_column(trigdata->tg_relation, trigdata->tg_newtuple,
							"deleted_at", &newdeleted);
		/* tuple_column reports a missing column as NULL: never deleted. */
		olddeleted = !olddeleted;
		newdeleted = !newdeleted;
		tuple = trigdata->tg_newtuple;
		if (!olddeleted && newdeleted)
			op = SE_AUDIT_DELETE;
		else if (olddeleted && !newdeleted)
			op = SE_AUDIT_RESTORE;
		else if (oldnull == newnull &&
				 (oldnull || DatumGetBool(DirectFunctionCall2(byteaeq, oldv, newv))))
			return PointerGetDatum(NULL);
		else
			op = se_versions_take_noted_operation(SE_AUDIT_UPDATE);
	}

	id = tuple_column(trigdata->tg_relation, tuple, "secret_id", &isnull);
	if (isnull)
		return PointerGetDatum(NULL);
	name = tuple_column(trigdata->tg_relation, tuple, "secret_name", &isnull);
	if (isnull)
		return PointerGetDatum(NULL);
	if (se_audit_prepare(&rec, op, SE_VIA_TABLE, DatumGetUUIDP(id)->data,
						 VARDATA_ANY(DatumGetTextPP(name)),
						 VARSIZE_ANY_EXHDR(DatumGetTextPP(name))))
	{
		Datum		version = tuple_column(trigdata->tg_relation, tuple,
										   "current_version", &isnull);

		rec.version = isnull ? 0 : DatumGetInt32(version);
		se_audit_emit(&rec, SE_AUDIT_OK, false);
	}
	watched_wrote = true;
	return PointerGetDatum(NULL);
}

/* ---------- writes refused or failing before the row trigger ---------- */

/*
 * A write that is refused (no EXECUTE on secret_create, no table
 * privilege, an access rule or policy's WITH CHECK: 42501), names a
 * secret that does not exist (secret_update: P0002) or fails otherwise
 * (a duplicate name) never reaches the row trigger above.  The executor
 * hooks watch the outermost statement that calls a write function of
 * secretenv or writes secretenv.secrets: its record is prepared before
 * the statement starts (with the name when the call's first argument is a
 * constant or a bound parameter, as drivers send it), and emitted with the
 * error's outcome if the statement fails without the trigger having
 * recorded a write in it.  Statements run inside it (the functions' own
 * INSERT or UPDATE) are not watched again.
 */
static ExecutorStart_hook_type prev_ExecutorStart = NULL;
static ExecutorRun_hook_type prev_ExecutorRun = NULL;
static ExecutorEnd_hook_type prev_ExecutorEnd = NULL;

static bool write_functions_valid = false;
static Oid	write_functions[16];
static SeAuditOp write_function_ops[16];
static int	nwrite_functions = 0;

static void
write_functions_changed(Datum arg, int cacheid, uint32 hashvalue)
{
	write_functions_valid = false;
}

static void
load_write_functions(void)
{
	static const struct
	{
		const char *name;
		SeAuditOp	op;
	}			names[] = {
		{"secret_create", SE_AUDIT_CREATE},
		{"secret_update", SE_AUDIT_UPDATE},
		{"secret_delete", SE_AUDIT_DELETE},
		{"secret_restore", SE_AUDIT_RESTORE},
		{"secret_destroy", SE_AUDIT_DESTROY},
		{"secret_stage", SE_AUDIT_STAGE},
		{"secret_promote", SE_AUDIT_PROMOTE},
		{"secret_rollback", SE_AUDIT_ROLLBACK}
	};
	Oid			nsp = get_namespace_oid("secretenv", true);

	nwrite_functions = 0;
	write_functions_valid = true;
	if (!OidIsValid(nsp))
		return;
	for (int i = 0; i < lengthof(names); i++)
	{
		CatCList   *list = SearchSysCacheList1(PROCNAMEARGSNSP,
											   CStringGetDatum(names[i].name));

		for (int j = 0; j < list->n_members && nwrite_functions < lengthof(write_functions); j++)
		{
			Form_pg_proc proc = (Form_pg_proc) GETSTRUCT(&list->members[j]->tuple);

			if (proc->pronamespace != nsp)
				continue;
			write_functions[nwrite_functions] = proc->oid;
			write_function_ops[nwrite_functions++] = names[i].op;
		}
		ReleaseSysCacheList(list);
	}
}

/* The text value of a call's argument, when the plan holds it. */
static bool
argument_text(Node *arg, ParamListInfo params, char **s, int *len)
{
	Datum		d;

	if (IsA(arg, RelabelType))
		arg = (Node *) ((RelabelType *) arg)->arg;
	if (IsA(arg, Const) && !((Const *) arg)->constisnull &&
		((Const *) arg)->consttype == TEXTOID)
		d = ((Const *) arg)->constvalue;
	else if (IsA(arg, Param) && ((Param *) arg)->paramkind == PARAM_EXTERN &&
			 ((Param *) arg)->paramtype == TEXTOID && params != NULL &&
			 params->paramFetch == NULL &&
			 ((Param *) arg)->paramid >= 1 && ((Param *) arg)->paramid <= params->numParams &&
			 !params->params[((Param *) arg)->paramid - 1].isnull)
		d = params->params[((Param *) arg)->paramid - 1].value;
	else
		return false;
	*s = VARDATA_ANY(DatumGetTextPP(d));
	*len = VARSIZE_ANY_EXHDR(DatumGetTextPP(d));
	return true;
}

/* Is expr a call of a write function?  Its operation, and the name if known. */
static bool
write_call(Node *expr, ParamListInfo params, SeAuditOp *op, char **name, int *namelen)
{
	FuncExpr   *f;

	if (expr == NULL || !IsA(expr, FuncExpr))
		return false;
	f = (FuncExpr *) expr;
	for (int i = 0; i < nwrite_functions; i++)
		if (f->funcid == write_functions[i])
		{
			*op = write_function_ops[i];
			if (f->args != NIL)
				(void) argument_text(linitial(f->args), params, name, namelen);
			return true;
		}
	return false;
}

/* Does the statement write secrets?  Its operation, and the name if known. */
static bool
statement_write(QueryDesc *queryDesc, SeAuditOp *op, char **name, int *namelen)
{
	PlannedStmt *stmt = queryDesc->plannedstmt;
	ListCell   *lc;

	*name = NULL;
	*namelen = 0;
	if (stmt->commandType == CMD_INSERT || stmt->commandType == CMD_UPDATE ||
		stmt->commandType == CMD_DELETE)
	{
		Oid			secrets = se_secrets_relid();

		if (stmt->planTree == NULL || !IsA(stmt->planTree, ModifyTable))
			return false;
		foreach(lc, ((ModifyTable *) stmt->planTree)->resultRelations)
		{
			RangeTblEntry *rte = rt_fetch(lfirst_int(lc), stmt->rtable);

			if (rte->relid == secrets && OidIsValid(secrets))
			{
				*op = stmt->commandType == CMD_INSERT ? SE_AUDIT_CREATE :
					stmt->commandType == CMD_UPDATE ? SE_AUDIT_UPDATE : SE_AUDIT_DELETE;
				return true;
			}
		}
		return false;
	}
	if (stmt->commandType != CMD_SELECT || stmt->planTree == NULL)
		return false;
	if (!write_functions_valid)
		load_write_functions();
	/* SELECT f(...) or SELECT * FROM f(...) */
	if (IsA(stmt->planTree, FunctionScan))
	{
		foreach(lc, ((FunctionScan *) stmt->planTree)->functions)
			if (write_call(((RangeTblFunction *) lfirst(lc))->funcexpr, queryDesc->params,
						   op, name, namelen))
				return true;
		return false;
	}
	foreach(lc, stmt->planTree->targetlist)
		if (write_call((Node *) ((TargetEntry *) lfirst(lc))->expr, queryDesc->params,
					   op, name, namelen))
			return true;
	return false;
}

static bool watching = false;
static QueryDesc *watched_query = NULL;
static SeAuditRecord watched;

/* In PG_CATCH of the watched statement: record it, unless a write was. */
static void
watched_statement_failed(QueryDesc *queryDesc)
{
	if (!watching || queryDesc != watched_query)
		return;
	watching = false;
	if (!watched_wrote)
		se_audit_emit(&watched, se_audit_outcome_of_error(geterrcode()), false);
}

static void
audit_ExecutorStart(QueryDesc *queryDesc, int eflags)
{
	bool		watch = false;
	SeAuditOp	op;
	char	   *name;
	int			namelen;

	if (!watching && se_audit_level != SE_AUDIT_OFF &&
		!(eflags & EXEC_FLAG_EXPLAIN_ONLY) && !IsParallelWorker() &&
		statement_write(queryDesc, &op, &name, &namelen))
		watch = se_audit_prepare(&watched, op, SE_VIA_TABLE, NULL, name, name ? namelen : 0);
	if (watch)
	{
		watching = true;
		watched_query = queryDesc;
		watched_wrote = false;
	}
	PG_TRY();
	{
		if (prev_ExecutorStart)
			prev_ExecutorStart(queryDesc, eflags);
		else
			standard_ExecutorStart(queryDesc, eflags);
	}
	PG_CATCH();
	{
		watched_statement_failed(queryDesc);
		PG_RE_THROW();
	}
	PG_END_TRY();
}

static void
audit_ExecutorRun(EXECUTOR_RUN_PARAMS_COMPAT)
{
	PG_TRY();
	{
		if (prev_ExecutorRun)
			prev_ExecutorRun(EXECUTOR_RUN_ARGS_COMPAT);
		else
			standard_ExecutorRun(EXECUTOR_RUN_ARGS_COMPAT);
	}
	PG_CATCH();
	{
		watched_statement_failed(queryDesc);
		PG_RE_THROW();
	}
	PG_END_TRY();
}

static void
audit_ExecutorEnd(QueryDesc *queryDesc)
{
	/* The watched statement ends here; an inner one leaves it watched. */
	if (watching && queryDesc == watched_query)
		watching = false;
	if (prev_ExecutorEnd)
		prev_ExecutorEnd(queryDesc);
	else
		standard_ExecutorEnd(queryDesc);
}

/* A transaction that ends (an error caught by a client's savepoint too). */
static void
audit_xact_callback(XactEvent event, void *arg)
{
	watching = false;
}

void
se_audit_hooks_init(void)
{
	CacheRegisterSyscacheCallback(PROCOID, write_functions_changed, (Datum) 0);
	RegisterXactCallback(audit_xact_callback, NULL);
	prev_ExecutorStart = ExecutorStart_hook;
	ExecutorStart_hook = audit_ExecutorStart;
	prev_ExecutorRun = ExecutorRun_hook;
	ExecutorRun_hook = audit_ExecutorRun;
	prev_ExecutorEnd = ExecutorEnd_hook;
	ExecutorEnd_hook = audit_ExecutorEnd;
}

/*
 * BEFORE UPDATE OR DELETE (row) and BEFORE TRUNCATE on secretenv.audit_log,
 * ENABLE ALWAYS: nobody changes or removes a record but audit_purge().  A
 * superuser can still drop or disable this trigger, or edit the files;
 * audit_verify() then reports the break.
 */
PG_FUNCTION_INFO_V1(audit_log_guard);
Datum
audit_log_guard(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("audit_log_guard() was not called by the trigger manager")));
	if (purging && TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
		return PointerGetDatum(trigdata->tg_trigtuple);
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("secretenv.audit_log is append-only"),
			 errdetail("Audit records cannot be updated, deleted or truncated."),
			 errhint("Use secretenv.audit_purge(before) to remove records older than a time.")));
	PG_RETURN_NULL();
}

/* ---------- verification ---------- */

enum
{
	C_SEQ, C_TIME, C_DB, C_SU, C_CU, C_ID, C_NAME, C_OP, C_VIA, C_OUTCOME,
	C_APP, C_CLIENT, C_PID, C_PURGED, C_ANCHOR, C_KEKV, C_MAC, C_VERSION, NUM_C
};

#define SELECT_COLUMNS "seq, event_time, database_name, session_user_name, " \
	"current_user_name, secret_id, secret_name, operation, via, outcome, " \
	"application_name, client_addr, backend_pid, purged_through, anchor_mac, " \
	"mac_kek_version, mac, version"

typedef struct ChainBreak
{
	int64		records;		/* records checked */
	int64		at;				/* seq of the first break, 0 = none */
	char	   *problem;
} ChainBreak;

static void
copy_text(char *dst, size_t size, Datum d, bool isnull)
{
	char	   *s = isnull ? pstrdup("") : TextDatumGetCString(d);

	strlcpy(dst, s, size);
	pfree(s);
}

/* Rebuild a row from the table; false when a field cannot be a record's. */
static bool
row_from_tuple(HeapTuple tuple, TupleDesc desc, SeAuditRow *row, bytea **mac)
{
	Datum		v[NUM_C];
	bool		n[NUM_C];
	char	   *s;
	int			op,
				via,
				outcome;

	for (int c = 0; c < NUM_C; c++)
		v[c] = SPI_getbinval(tuple, desc, c + 1, &n[c]);
	memset(row, 0, sizeof(*row));
	row->seq = DatumGetInt64(v[C_SEQ]);
	row->rec.time = DatumGetTimestampTz(v[C_TIME]);
	copy_text(row->rec.database, NAMEDATALEN, v[C_DB], n[C_DB]);
	copy_text(row->rec.session_user, NAMEDATALEN, v[C_SU], n[C_SU]);
	copy_text(row->rec.current_user, NAMEDATALEN, v[C_CU], n[C_CU]);
	row->rec.has_id = !n[C_ID];
	if (!n[C_ID])
		memcpy(row->rec.id, DatumGetUUIDP(v[C_ID])->data, SE_AUDIT_UUID_LEN);
	row->rec.namelen = -1;
	if (!n[C_NAME])
	{
		text	   *t = DatumGetTextPP(v[C_NAME]);

		if (VARSIZE_ANY_EXHDR(t) > SE_AUDIT_MAX_NAME)
			return false;
		row->rec.namelen = VARSIZE_ANY_EXHDR(t);
		memcpy(row->rec.name, VARDATA_ANY(t), row->rec.namelen);
	}
	s = TextDatumGetCString(v[C_OP]);
	op = se_audit_op_from_name(s);
	s = TextDatumGetCString(v[C_VIA]);
	via = se_audit_via_from_name(s);
	s = TextDatumGetCString(v[C_OUTCOME]);
	outcome = se_audit_outcome_from_name(s);
	if (op < 0 || via < 0 || outcome < 0)
		return false;
	row->rec.op = op;
	row->rec.via = via;
	row->rec.outcome = outcome;
	copy_text(row->rec.application_name, NAMEDATALEN, v[C_APP], n[C_APP]);
	copy_text(row->rec.client_addr, sizeof(row->rec.client_addr), v[C_CLIENT], n[C_CLIENT]);
	if (!n[C_CLIENT] && row->rec.client_addr[0] == '\0')
		return false;
	row->rec.pid = DatumGetInt32(v[C_PID]);
	row->has_purged_through = !n[C_PURGED];
	if (!n[C_PURGED])
		row->purged_through = DatumGetInt64(v[C_PURGED]);
	row->has_anchor = !n[C_ANCHOR];
	if (!n[C_ANCHOR])
	{
		bytea	   *a = DatumGetByteaPP(v[C_ANCHOR]);

		if (VARSIZE_ANY_EXHDR(a) != SE_AUDIT_MAC_LEN)
			return false;
		memcpy(row->anchor, VARDATA_ANY(a), SE_AUDIT_MAC_LEN);
	}
	row->mac_kek_version = DatumGetInt32(v[C_KEKV]);
	row->rec.version = n[C_VERSION] ? 0 : DatumGetInt32(v[C_VERSION]);
	if (!n[C_VERSION] && row->rec.version <= 0)
		return false;
	*mac = DatumGetByteaPP(v[C_MAC]);
	return VARSIZE_ANY_EXHDR(*mac) == SE_AUDIT_MAC_LEN;
}

static void
set_break(ChainBreak *b, int64 at, char *problem)
{
	b->at = at;
	b->problem = problem;
}

/* Walk the chain (SPI connected, table locked by the caller if needed). */
static void
verify_chain(ChainBreak *b)
{
	int64		first;
	int64		expected;
	uint8		prev[SE_AUDIT_MAC_LEN];
	size_t		prevlen = 0;
	int64		head_seq;
	bool		isnull;
	Portal		portal;
	SPIPlanPtr	plan;
	StringInfoData enc;

	b->records = 0;
	b->at = 0;
	b->problem = NULL;

	if (SPI_execute("SELECT pg_catalog.min(seq) FROM secretenv.audit_log", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read secretenv.audit_log");
	first = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (isnull)
	{
		if (se_audit_get_head(MyDatabaseId, &head_seq, NULL))
			set_break(b, 1, psprintf("records 1 to " INT64_FORMAT " are missing: the table is empty but this server's writer chained them",
								   head_seq));
		return;
	}
	if (first != 1)
	{
		Datum		arg = Int64GetDatum(first - 1);
		Oid			argtype = INT8OID;
		bytea	   *anchor;

		if (SPI_execute_with_args("SELECT anchor_mac FROM secretenv.audit_log "
								  "WHERE operation OPERATOR(pg_catalog.=) 'purge' "
								  "AND purged_through OPERATOR(pg_catalog.=) $1 "
								  "ORDER BY seq DESC LIMIT 1",
								  1, &argtype, &arg, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not read secretenv.audit_log");
		if (SPI_processed == 0)
		{
			set_break(b, first - 1, psprintf("record " INT64_FORMAT " is missing: no purge checkpoint accounts for the records before " INT64_FORMAT,
										   first - 1, first));
			return;
		}
		anchor = DatumGetByteaPP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		if (isnull || VARSIZE_ANY_EXHDR(anchor) != SE_AUDIT_MAC_LEN)
		{
			set_break(b, first - 1, psprintf("the purge checkpoint of record " INT64_FORMAT " has no valid anchor", first - 1));
			return;
		}
		memcpy(prev, VARDATA_ANY(anchor), SE_AUDIT_MAC_LEN);
		prevlen = SE_AUDIT_MAC_LEN;
	}

	plan = SPI_prepare("SELECT " SELECT_COLUMNS " FROM secretenv.audit_log ORDER BY seq", 0, NULL);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	portal = SPI_cursor_open(NULL, plan, NULL, NULL, true);
	initStringInfo(&enc);
	expected = first;
	for (;;)
	{
		SPI_cursor_fetch(portal, true, 1000);
		if (SPI_processed == 0)
			break;
		for (uint64 i = 0; i < SPI_processed && b->at == 0; i++)
		{
			SeAuditRow row;
			bytea	   *stored;
			const uint8_t *kek;
			uint8		key[SE_KEY_LEN];
			uint8		mac[SE_AUDIT_MAC_LEN];
			se_status	st;

			if (!row_from_tuple(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, &row, &stored))
			{
				set_break(b, row.seq, psprintf("record " INT64_FORMAT " holds a value no audit record can have", row.seq));
				break;
			}
			if (row.seq != expected)
			{
				set_break(b, expected, psprintf("record " INT64_FORMAT " is missing (the next record is " INT64_FORMAT ")",
											   expected, row.seq));
				break;
			}
			kek = se_keyring_kek_if_available(row.mac_kek_version);
			if (kek == NULL)
			{
				set_break(b, row.seq, psprintf("record " INT64_FORMAT " cannot be checked: KEK version %d is not configured",
											  row.seq, row.mac_kek_version));
				break;
			}
			resetStringInfo(&enc);
			se_audit_encode(&row, &enc);
			st = se_audit_key(kek, key);
			if (st == SE_OK)
				st = se_audit_mac(key, prev, prevlen, (const uint8 *) enc.data, enc.len, mac);
			se_wipe(key, sizeof(key));
			if (st != SE_OK)
				elog(ERROR, "could not compute an audit MAC");
			if (memcmp(mac, VARDATA_ANY(stored), SE_AUDIT_MAC_LEN) != 0)
			{
				set_break(b, row.seq, psprintf("record " INT64_FORMAT " does not match its MAC: it was altered, inserted or moved",
											  row.seq));
				break;
			}
			memcpy(prev, mac, SE_AUDIT_MAC_LEN);
			prevlen = SE_AUDIT_MAC_LEN;
			b->records++;
			expected++;
		}
		if (b->at != 0)
			break;
	}
	SPI_cursor_close(portal);
	SPI_freeplan(plan);
	if (b->at == 0 && se_audit_get_head(MyDatabaseId, &head_seq, NULL) && head_seq >= expected)
		set_break(b, expected, psprintf("records " INT64_FORMAT " to " INT64_FORMAT " are missing: this server's writer chained them",
									   expected, head_seq));
}

PG_FUNCTION_INFO_V1(audit_verify);
Datum
audit_verify(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};
	ChainBreak	b;
	MemoryContext caller = CurrentMemoryContext;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	verify_chain(&b);
	MemoryContextSwitchTo(caller);
	values[0] = BoolGetDatum(b.at == 0);
	values[1] = Int64GetDatum(b.records);
	if (b.at == 0)
	{
		nulls[2] = true;
		nulls[3] = true;
	}
	else
	{
		values[2] = Int64GetDatum(b.at);
		values[3] = CStringGetTextDatum(b.problem);
	}
	SPI_finish();
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

/* ---------- purge ---------- */

/*
 * Delete every record up to the last one older than the cutoff, after
 * checking the whole chain (a broken chain is never purged: that would
 * erase the evidence), and append a checkpoint that anchors the rest.
 */
PG_FUNCTION_INFO_V1(audit_purge);
Datum
audit_purge(PG_FUNCTION_ARGS)
{
	TimestampTz cutoff;
	ChainBreak	b;
	int64		through;
	int64		deleted;
	bool		isnull;
	bytea	   *anchor;
	Datum		arg;
	Oid			argtype;
	SeAuditRow	row;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("the cutoff of audit_purge must not be null")));
	cutoff = PG_GETARG_TIMESTAMPTZ(0);
	if (TIMESTAMP_NOT_FINITE(cutoff) || cutoff > GetCurrentTransactionStartTimestamp())
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the cutoff of audit_purge must be a time in the past"),
				 errdetail("Records not yet written could otherwise be purged as they arrive.")));
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("cannot purge audit records during recovery")));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute("LOCK TABLE secretenv.audit_log IN SHARE ROW EXCLUSIVE MODE",
					false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "could not lock secretenv.audit_log");
	verify_chain(&b);
	if (b.at != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("refusing to purge a broken audit chain"),
				 errdetail("audit_verify() reports: %s.", b.problem),
				 errhint("Keep the records as evidence; investigate the break first.")));

	arg = TimestampTzGetDatum(cutoff);
	argtype = TIMESTAMPTZOID;
	if (SPI_execute_with_args("SELECT seq, mac FROM secretenv.audit_log "
							  "WHERE event_time OPERATOR(pg_catalog.<) $1 "
							  "ORDER BY seq DESC LIMIT 1",
							  1, &argtype, &arg, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read secretenv.audit_log");
	if (SPI_processed == 0)
	{
		SPI_finish();
		PG_RETURN_INT64(0);
	}
	through = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	anchor = DatumGetByteaPP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	memset(&row, 0, sizeof(row));
	memcpy(row.anchor, VARDATA_ANY(anchor), SE_AUDIT_MAC_LEN);

	arg = Int64GetDatum(through);
	argtype = INT8OID;
	purging = true;
	PG_TRY();
	{
		if (SPI_execute_with_args("DELETE FROM secretenv.audit_log WHERE seq OPERATOR(pg_catalog.<=) $1",
								  1, &argtype, &arg, NULL, false, 0) != SPI_OK_DELETE)
			elog(ERROR, "could not delete from secretenv.audit_log");
	}
	PG_FINALLY();
	{
		purging = false;
	}
	PG_END_TRY();
	deleted = SPI_processed;

	se_audit_fill(&row.rec, SE_AUDIT_PURGE, SE_VIA_PURGE, SE_AUDIT_OK, NULL, NULL, 0);
	row.has_purged_through = true;
	row.purged_through = through;
	row.has_anchor = true;
	se_audit_chain_append(&row, 1);
	SPI_finish();
	PG_RETURN_INT64(deleted);
}

PG_FUNCTION_INFO_V1(audit_stats);
Datum
audit_stats(PG_FUNCTION_ARGS)
{
	PG_RETURN_DATUM(se_audit_stats_jsonb());
}
