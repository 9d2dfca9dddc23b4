/*-------------------------------------------------------------------------
 *
 * audit_chain.c
 *	  Append records to this database's chain in secretenv.audit_log.
 *
 * Two kinds of callers append: the database's writer (audit_worker.c) and
 * audit_purge() (its checkpoint).  Each appends inside its transaction
 * under a SHARE ROW EXCLUSIVE lock of the table, which conflicts with
 * itself, so appends are serialized: each reads the last record, numbers
 * its records on from it and chains their MACs to its MAC.  If the shared
 * memory head (the last record a writer chained since the server started)
 * is further on than the table's last record, records were deleted from
 * the tail: the chain continues from the head, so the gap stays visible to
 * audit_verify().  The audit key is derived from the current KEK for the
 * call and wiped before anything else can fail.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "audit/audit.h"
#include "keys/crypto_errors.h"
#include "keys/keyring.h"
#include "se_messages.h"

#define INSERT_ARGS 18

/* The columns' types, in the order of the INSERT below. */
static const Oid column_types[INSERT_ARGS] = {
	INT8OID, TIMESTAMPTZOID, TEXTOID, TEXTOID, TEXTOID, UUIDOID, TEXTOID,
	TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, INT4OID, INT8OID, BYTEAOID,
	INT4OID, BYTEAOID, INT4OID
};
static const Oid array_types[INSERT_ARGS] = {
	INT8ARRAYOID, TIMESTAMPTZARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
	UUIDARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
	TEXTARRAYOID, TEXTARRAYOID, INT4ARRAYOID, INT8ARRAYOID, BYTEAARRAYOID,
	INT4ARRAYOID, BYTEAARRAYOID, INT4ARRAYOID
};

static SPIPlanPtr insert_plan = NULL;
static SPIPlanPtr lock_plan = NULL;
static SPIPlanPtr last_plan = NULL;

/* A statement without arguments, planned once per backend and kept. */
static SPIPlanPtr
kept_plan(SPIPlanPtr *plan, const char *sql)
{
	if (*plan == NULL)
	{
		SPIPlanPtr	p = SPI_prepare(sql, 0, NULL);

		if (p == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(p);
		*plan = p;
	}
	return *plan;
}

/* One statement inserts a whole batch: one array per column, unnested. */
static SPIPlanPtr
get_insert_plan(void)
{
	if (insert_plan == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare("INSERT INTO secretenv.audit_log "
									   "(seq, event_time, database_name, session_user_name, "
									   "current_user_name, secret_id, secret_name, operation, via, "
									   "outcome, application_name, client_addr, backend_pid, "
									   "purged_through, anchor_mac, mac_kek_version, mac, version) "
									   "SELECT * FROM ROWS FROM (pg_catalog.unnest($1), "
									   "pg_catalog.unnest($2), pg_catalog.unnest($3), "
									   "pg_catalog.unnest($4), pg_catalog.unnest($5), "
									   "pg_catalog.unnest($6), pg_catalog.unnest($7), "
									   "pg_catalog.unnest($8), pg_catalog.unnest($9), "
									   "pg_catalog.unnest($10), pg_catalog.unnest($11), "
									   "pg_catalog.unnest($12), pg_catalog.unnest($13), "
									   "pg_catalog.unnest($14), pg_catalog.unnest($15), "
									   "pg_catalog.unnest($16), pg_catalog.unnest($17), "
									   "pg_catalog.unnest($18))",
									   INSERT_ARGS, (Oid *) array_types);

		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		insert_plan = plan;
	}
	return insert_plan;
}

static bytea *
to_bytea(const uint8 *data, int len)
{
	bytea	   *b = palloc(VARHDRSZ + len);

	SET_VARSIZE(b, VARHDRSZ + len);
	memcpy(VARDATA(b), data, len);
	return b;
}

/* Row i's value of each column into v[c][i], n[c][i]. */
static void
row_values(const SeAuditRow *row, int i, Datum **v, bool **n)
{
	const SeAuditRecord *rec = &row->rec;

	for (int c = 0; c < INSERT_ARGS; c++)
		n[c][i] = false;
	v[0][i] = Int64GetDatum(row->seq);
	v[1][i] = TimestampTzGetDatum(rec->time);
	v[2][i] = CStringGetTextDatum(rec->database);
	v[3][i] = CStringGetTextDatum(rec->session_user);
	v[4][i] = CStringGetTextDatum(rec->current_user);
	if (rec->has_id)
	{
		pg_uuid_t  *u = palloc(sizeof(pg_uuid_t));

		memcpy(u->data, rec->id, UUID_LEN);
		v[5][i] = UUIDPGetDatum(u);
	}
	else
		n[5][i] = true;
	if (rec->namelen >= 0)
		v[6][i] = PointerGetDatum(cstring_to_text_with_len(rec->name, rec->namelen));
	else
		n[6][i] = true;
	v[7][i] = CStringGetTextDatum(se_audit_op_name(rec->op));
	v[8][i] = CStringGetTextDatum(se_audit_via_name(rec->via));
	v[9][i] = CStringGetTextDatum(se_audit_outcome_name(rec->outcome));
	v[10][i] = CStringGetTextDatum(rec->application_name);
	if (rec->client_addr[0] != '\0')
		v[11][i] = CStringGetTextDatum(rec->client_addr);
	else
		n[11][i] = true;
	v[12][i] = Int32GetDatum(rec->pid);
	if (row->has_purged_through)
		v[13][i] = Int64GetDatum(row->purged_through);
	else
		n[13][i] = true;
	if (row->has_anchor)
		v[14][i] = PointerGetDatum(to_bytea(row->anchor, SE_AUDIT_MAC_LEN));
	else
		n[14][i] = true;
	v[15][i] = Int32GetDatum(row->mac_kek_version);
	v[16][i] = PointerGetDatum(to_bytea(row->mac, SE_AUDIT_MAC_LEN));
	if (rec->version > 0)
		v[17][i] = Int32GetDatum(rec->version);
	else
		n[17][i] = true;
}

static void
insert_rows(const SeAuditRow *rows, int count)
{
	Datum	   *v[INSERT_ARGS];
	bool	   *n[INSERT_ARGS];
	Datum		args[INSERT_ARGS];
	int			dims[1] = {count};
	int			lbs[1] = {1};

	for (int c = 0; c < INSERT_ARGS; c++)
	{
		v[c] = palloc(sizeof(Datum) * count);
		n[c] = palloc(sizeof(bool) * count);
	}
	for (int i = 0; i < count; i++)
		row_values(&rows[i], i, v, n);
	for (int c = 0; c < INSERT_ARGS; c++)
	{
		int16		typlen;
		bool		typbyval;
		char		typalign;

		get_typlenbyvalalign(column_types[c], &typlen, &typbyval, &typalign);
		args[c] = PointerGetDatum(construct_md_array(v[c], n[c], 1, dims, lbs,
													 column_types[c], typlen,
													 typbyval, typalign));
	}
	if (SPI_execute_plan(get_insert_plan(), args, NULL, false, 0) != SPI_OK_INSERT ||
		SPI_processed != (uint64) count)
		elog(ERROR, "could not insert into secretenv.audit_log");
}

void
se_audit_chain_append(SeAuditRow *rows, int n)
{
	int64		seq = 0;
	uint8		prev[SE_AUDIT_MAC_LEN];
	size_t		prevlen = 0;
	int64		head_seq;
	uint8		head_mac[SE_AUDIT_MAC_LEN];
	int32		version;
	const uint8_t *kek;
	uint8		key[SE_KEY_LEN];
	se_status	st = SE_OK;
	StringInfoData enc;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	/* Planned once: the writer appends batch after batch. */
	if (SPI_execute_plan(kept_plan(&lock_plan, "LOCK TABLE secretenv.audit_log IN SHARE ROW EXCLUSIVE MODE"),
						 NULL, NULL, false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "could not lock secretenv.audit_log");
	if (SPI_execute_plan(kept_plan(&last_plan, "SELECT seq, mac FROM secretenv.audit_log ORDER BY seq DESC LIMIT 1"),
						 NULL, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read secretenv.audit_log");
	if (SPI_processed > 0)
	{
		bool		isnull;
		bytea	   *mac;

		seq = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		mac = DatumGetByteaPP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
		/* A MAC of another length is already a break; verify reports it. */
		if (!isnull && VARSIZE_ANY_EXHDR(mac) == SE_AUDIT_MAC_LEN)
		{
			memcpy(prev, VARDATA_ANY(mac), SE_AUDIT_MAC_LEN);
			prevlen = SE_AUDIT_MAC_LEN;
		}
	}
	if (se_audit_get_head(MyDatabaseId, &head_seq, head_mac) && head_seq > seq)
	{
		seq = head_seq;
		memcpy(prev, head_mac, SE_AUDIT_MAC_LEN);
		prevlen = SE_AUDIT_MAC_LEN;
	}

	version = se_keyring_current_version();
	kek = se_keyring_kek(version);
	initStringInfo(&enc);
	st = se_audit_key(kek, key);
	for (int i = 0; i < n && st == SE_OK; i++)
	{
		rows[i].seq = ++seq;
		rows[i].mac_kek_version = version;
		resetStringInfo(&enc);
		se_audit_encode(&rows[i], &enc);
		st = se_audit_mac(key, prev, prevlen, (const uint8 *) enc.data, enc.len, rows[i].mac);
		memcpy(prev, rows[i].mac, SE_AUDIT_MAC_LEN);
		prevlen = SE_AUDIT_MAC_LEN;
	}
	se_wipe(key, sizeof(key));
	if (st != SE_OK)
		se_report_crypto_failure(st, version, "compute an audit record's MAC");

	insert_rows(rows, n);
	SPI_finish();
}
