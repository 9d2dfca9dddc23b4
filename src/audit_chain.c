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
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "audit.h"
#include "crypto_errors.h"
#include "keyring.h"
#include "se_messages.h"

#define INSERT_ARGS 17

static SPIPlanPtr insert_plan = NULL;

static SPIPlanPtr
get_insert_plan(void)
{
	static const Oid argtypes[INSERT_ARGS] = {
		INT8OID, TIMESTAMPTZOID, TEXTOID, TEXTOID, TEXTOID, UUIDOID, TEXTOID,
		TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, INT4OID, INT8OID, BYTEAOID,
		INT4OID, BYTEAOID
	};

	if (insert_plan == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare("INSERT INTO secretenv.audit_log "
									   "(seq, event_time, database_name, session_user_name, "
									   "current_user_name, secret_id, secret_name, operation, via, "
									   "outcome, application_name, client_addr, backend_pid, "
									   "purged_through, anchor_mac, mac_kek_version, mac) "
									   "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, "
									   "$12, $13, $14, $15, $16, $17)",
									   INSERT_ARGS, (Oid *) argtypes);

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

static void
insert_row(const SeAuditRow *row)
{
	const SeAuditRecord *rec = &row->rec;
	Datum		v[INSERT_ARGS];
	char		n[INSERT_ARGS];

	memset(n, ' ', sizeof(n));
	v[0] = Int64GetDatum(row->seq);
	v[1] = TimestampTzGetDatum(rec->time);
	v[2] = CStringGetTextDatum(rec->database);
	v[3] = CStringGetTextDatum(rec->session_user);
	v[4] = CStringGetTextDatum(rec->current_user);
	if (rec->has_id)
	{
		pg_uuid_t  *u = palloc(sizeof(pg_uuid_t));

		memcpy(u->data, rec->id, UUID_LEN);
		v[5] = UUIDPGetDatum(u);
	}
	else
		n[5] = 'n';
	if (rec->namelen >= 0)
		v[6] = PointerGetDatum(cstring_to_text_with_len(rec->name, rec->namelen));
	else
		n[6] = 'n';
	v[7] = CStringGetTextDatum(se_audit_op_name(rec->op));
	v[8] = CStringGetTextDatum(se_audit_via_name(rec->via));
	v[9] = CStringGetTextDatum(se_audit_outcome_name(rec->outcome));
	v[10] = CStringGetTextDatum(rec->application_name);
	if (rec->client_addr[0] != '\0')
		v[11] = CStringGetTextDatum(rec->client_addr);
	else
		n[11] = 'n';
	v[12] = Int32GetDatum(rec->pid);
	if (row->has_purged_through)
		v[13] = Int64GetDatum(row->purged_through);
	else
		n[13] = 'n';
	if (row->has_anchor)
		v[14] = PointerGetDatum(to_bytea(row->anchor, SE_AUDIT_MAC_LEN));
	else
		n[14] = 'n';
	v[15] = Int32GetDatum(row->mac_kek_version);
	v[16] = PointerGetDatum(to_bytea(row->mac, SE_AUDIT_MAC_LEN));
	if (SPI_execute_plan(get_insert_plan(), v, n, false, 0) != SPI_OK_INSERT)
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
	if (SPI_execute("LOCK TABLE secretenv.audit_log IN SHARE ROW EXCLUSIVE MODE",
					false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "could not lock secretenv.audit_log");
	if (SPI_execute("SELECT seq, mac FROM secretenv.audit_log ORDER BY seq DESC LIMIT 1",
					true, 1) != SPI_OK_SELECT)
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

	for (int i = 0; i < n; i++)
		insert_row(&rows[i]);
	SPI_finish();
}
