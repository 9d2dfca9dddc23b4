/*-------------------------------------------------------------------------
 *
 * audit_chain.c
 *	  Append records to this database's chain in secretenv.audit_log.
 *
 * Two kinds of callers append: the database's writer (audit_worker.c) and
 * audit_purge() (its checkpoint).  Each appends inside its transaction
 * under a SHARE ROW EXCLUSIVE lock of the table, which conflicts with
 * itself, so appends are serialized: each reads the last record (through
 * the primary key, newest first), numbers its records on from it and
 * chains their MACs to its MAC.  If the shared memory head (the last
 * record a writer chained since the server started) is further on than
 * the table's last record, records were deleted from the tail: the chain
 * continues from the head, so the gap stays visible to audit_verify().
 * The audit key is derived from the current KEK for the call and lives
 * only in OpenSSL's keyed context, which is freed (and cleansed) before
 * anything else can fail.
 *
 * The rows go in as one multi-insert of the table with its index entries,
 * not through an INSERT statement: the writer's work per record is most of
 * the audit's cost on the read path (docs/audit.md, "Cost"), and a planned
 * INSERT ... SELECT FROM unnest() spent about half of it in the executor,
 * building arrays and unnesting them again.  The table's CHECK and NOT NULL
 * constraints still hold (ExecConstraints); INSERT triggers, which no
 * secretenv object defines, do not fire.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "nodes/execnodes.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "audit/audit.h"
#include "keys/crypto_errors.h"
#include "keys/keyring.h"
#include "pg_compat.h"
#include "se_messages.h"

/* The columns secretenv writes, found by name in the table's descriptor. */
typedef enum AuditColumn
{
	COL_SEQ,
	COL_EVENT_TIME,
	COL_DATABASE,
	COL_SESSION_USER,
	COL_CURRENT_USER,
	COL_SECRET_ID,
	COL_SECRET_NAME,
	COL_OPERATION,
	COL_VIA,
	COL_OUTCOME,
	COL_APPLICATION,
	COL_CLIENT_ADDR,
	COL_PID,
	COL_PURGED_THROUGH,
	COL_ANCHOR,
	COL_MAC_KEK_VERSION,
	COL_MAC,
	COL_VERSION,
	AUDIT_COLUMNS
} AuditColumn;

static const char *const column_names[AUDIT_COLUMNS] = {
	"seq", "event_time", "database_name", "session_user_name",
	"current_user_name", "secret_id", "secret_name", "operation", "via",
	"outcome", "application_name", "client_addr", "backend_pid",
	"purged_through", "anchor_mac", "mac_kek_version", "mac", "version"
};

/* Each column's attribute number, 1-based. */
static void
find_columns(TupleDesc desc, AttrNumber *attnum)
{
	for (int c = 0; c < AUDIT_COLUMNS; c++)
	{
		attnum[c] = InvalidAttrNumber;
		for (int a = 0; a < desc->natts; a++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, a);

			if (!att->attisdropped && strcmp(NameStr(att->attname), column_names[c]) == 0)
			{
				attnum[c] = att->attnum;
				break;
			}
		}
		if (attnum[c] == InvalidAttrNumber)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("table secretenv.audit_log has no column \"%s\"", column_names[c]),
					 errhint("Run ALTER EXTENSION secretenv UPDATE.")));
	}
}

static Datum
bytea_datum(const uint8 *data, int len)
{
	bytea	   *b = palloc(VARHDRSZ + len);

	SET_VARSIZE(b, VARHDRSZ + len);
	memcpy(VARDATA(b), data, len);
	return PointerGetDatum(b);
}

/* A row's values into the slot; a column not secretenv's stays NULL. */
static void
store_row(const SeAuditRow *row, const AttrNumber *attnum, TupleTableSlot *slot)
{
	const SeAuditRecord *rec = &row->rec;
	Datum	   *v = slot->tts_values;
	bool	   *n = slot->tts_isnull;

#define SET(col, value) (v[attnum[col] - 1] = (value), n[attnum[col] - 1] = false)

	ExecClearTuple(slot);
	for (int a = 0; a < slot->tts_tupleDescriptor->natts; a++)
		n[a] = true;
	SET(COL_SEQ, Int64GetDatum(row->seq));
	SET(COL_EVENT_TIME, TimestampTzGetDatum(rec->time));
	SET(COL_DATABASE, CStringGetTextDatum(rec->database));
	SET(COL_SESSION_USER, CStringGetTextDatum(rec->session_user));
	SET(COL_CURRENT_USER, CStringGetTextDatum(rec->current_user));
	if (rec->has_id)
	{
		pg_uuid_t  *u = palloc(sizeof(pg_uuid_t));

		memcpy(u->data, rec->id, UUID_LEN);
		SET(COL_SECRET_ID, UUIDPGetDatum(u));
	}
	if (rec->namelen >= 0)
		SET(COL_SECRET_NAME, PointerGetDatum(cstring_to_text_with_len(rec->name, rec->namelen)));
	SET(COL_OPERATION, CStringGetTextDatum(se_audit_op_name(rec->op)));
	SET(COL_VIA, CStringGetTextDatum(se_audit_via_name(rec->via)));
	SET(COL_OUTCOME, CStringGetTextDatum(se_audit_outcome_name(rec->outcome)));
	SET(COL_APPLICATION, CStringGetTextDatum(rec->application_name));
	if (rec->client_addr[0] != '\0')
		SET(COL_CLIENT_ADDR, CStringGetTextDatum(rec->client_addr));
	SET(COL_PID, Int32GetDatum(rec->pid));
	if (row->has_purged_through)
		SET(COL_PURGED_THROUGH, Int64GetDatum(row->purged_through));
	if (row->has_anchor)
		SET(COL_ANCHOR, bytea_datum(row->anchor, SE_AUDIT_MAC_LEN));
	SET(COL_MAC_KEK_VERSION, Int32GetDatum(row->mac_kek_version));
	SET(COL_MAC, bytea_datum(row->mac, SE_AUDIT_MAC_LEN));
	if (rec->version > 0)
		SET(COL_VERSION, Int32GetDatum(rec->version));
#undef SET
	ExecStoreVirtualTuple(slot);
}

/*
 * The last record's seq and MAC (*prevlen 0: no record, or a MAC of
 * another length, which is already a break that audit_verify() reports).
 * Read with a snapshot taken under the lock, so that it sees the appends
 * committed before and this transaction's own purge.
 */
static int64
last_record(Relation rel, const AttrNumber *attnum, uint8 *prev, size_t *prevlen)
{
	Relation	pkey;
	Snapshot	snapshot;
	SysScanDesc scan;
	HeapTuple	tuple;
	int64		seq = 0;

	*prevlen = 0;
	(void) RelationGetIndexList(rel);
	if (!OidIsValid(rel->rd_pkindex))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table secretenv.audit_log has no primary key"),
				 errhint("Its primary key on seq orders the chain; restore it.")));
	pkey = index_open(rel->rd_pkindex, AccessShareLock);
	CommandCounterIncrement();
	snapshot = RegisterSnapshot(GetLatestSnapshot());
	scan = systable_beginscan_ordered(rel, pkey, snapshot, 0, NULL);
	tuple = systable_getnext_ordered(scan, BackwardScanDirection);
	if (HeapTupleIsValid(tuple))
	{
		TupleDesc	desc = RelationGetDescr(rel);
		bool		isnull;
		Datum		d;

		d = heap_getattr(tuple, attnum[COL_SEQ], desc, &isnull);
		seq = isnull ? 0 : DatumGetInt64(d);
		d = heap_getattr(tuple, attnum[COL_MAC], desc, &isnull);
		if (!isnull)
		{
			bytea	   *mac = DatumGetByteaPP(d);

			if (VARSIZE_ANY_EXHDR(mac) == SE_AUDIT_MAC_LEN)
			{
				memcpy(prev, VARDATA_ANY(mac), SE_AUDIT_MAC_LEN);
				*prevlen = SE_AUDIT_MAC_LEN;
			}
		}
	}
	systable_endscan_ordered(scan);
	UnregisterSnapshot(snapshot);
	index_close(pkey, AccessShareLock);
	return seq;
}

/* The chained rows into the table and its indexes. */
static void
insert_rows(Relation rel, const AttrNumber *attnum, const SeAuditRow *rows, int n)
{
	EState	   *estate = CreateExecutorState();
	ResultRelInfo *rri = makeNode(ResultRelInfo);
	TupleTableSlot **slots = palloc(sizeof(TupleTableSlot *) * n);
	bool		constrained = RelationGetDescr(rel)->constr != NULL;

	InitResultRelInfo(rri, rel, 0, NULL, 0);
	ExecOpenIndices(rri, false);
	for (int i = 0; i < n; i++)
	{
		slots[i] = table_slot_create(rel, &estate->es_tupleTable);
		store_row(&rows[i], attnum, slots[i]);
		if (constrained)
			ExecConstraints(rri, slots[i], estate);
	}
	table_multi_insert(rel, slots, n, GetCurrentCommandId(true), 0, NULL);
	for (int i = 0; i < n; i++)
		(void) se_insert_index_tuples(rri, slots[i], estate);
	ExecCloseIndices(rri);
	ExecResetTupleTable(estate->es_tupleTable, false);
	FreeExecutorState(estate);
	pfree(slots);
}

void
se_audit_chain_append(SeAuditRow *rows, int n)
{
	Oid			nsp = get_namespace_oid("secretenv", false);
	Oid			relid = get_relname_relid("audit_log", nsp);
	Relation	rel;
	AttrNumber	attnum[AUDIT_COLUMNS];
	int64		seq;
	uint8		prev[SE_AUDIT_MAC_LEN];
	size_t		prevlen;
	int64		head_seq;
	uint8		head_mac[SE_AUDIT_MAC_LEN];
	int32		version;
	StringInfo	encoded;
	se_audit_mac_run *run = NULL;
	se_status	st;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table secretenv.audit_log does not exist"),
				 errhint("Run ALTER EXTENSION secretenv UPDATE.")));
	rel = table_open(relid, ShareRowExclusiveLock);
	find_columns(RelationGetDescr(rel), attnum);
	seq = last_record(rel, attnum, prev, &prevlen);
	if (se_audit_get_head(MyDatabaseId, &head_seq, head_mac) && head_seq > seq)
	{
		seq = head_seq;
		memcpy(prev, head_mac, SE_AUDIT_MAC_LEN);
		prevlen = SE_AUDIT_MAC_LEN;
	}
	/* Only a forged record can get here; numbering on would wrap around. */
	if (seq > PG_INT64_MAX - n)
		ereport(ERROR,
				(errcode(ERRCODE_SEQUENCE_GENERATOR_LIMIT_EXCEEDED),
				 errmsg("secretenv.audit_log has no record numbers left"),
				 errdetail("Its last record has seq " INT64_FORMAT ".", seq),
				 errhint("Run secretenv.audit_verify() to find the forged record.")));

	/*
	 * Encode every record first: palloc can throw, and nothing may throw
	 * while the keyed MAC run (outside PostgreSQL's memory) is open.
	 */
	version = se_keyring_current_version();
	encoded = palloc(sizeof(StringInfoData) * n);
	for (int i = 0; i < n; i++)
	{
		rows[i].seq = seq + 1 + i;
		rows[i].mac_kek_version = version;
		initStringInfo(&encoded[i]);
		se_audit_encode(&rows[i], &encoded[i]);
	}
	st = se_audit_mac_run_begin(se_keyring_kek(version), &run);
	for (int i = 0; i < n && st == SE_OK; i++)
	{
		st = se_audit_mac_run_next(run, prev, prevlen, (const uint8 *) encoded[i].data,
								   encoded[i].len, rows[i].mac);
		memcpy(prev, rows[i].mac, SE_AUDIT_MAC_LEN);
		prevlen = SE_AUDIT_MAC_LEN;
	}
	se_audit_mac_run_end(run);
	if (st != SE_OK)
		se_report_crypto_failure(st, version, "compute an audit record's MAC");

	insert_rows(rel, attnum, rows, n);
	table_close(rel, NoLock);
}
