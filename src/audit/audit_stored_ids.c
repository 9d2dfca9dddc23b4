/*-------------------------------------------------------------------------
 *
 * audit_stored_ids.c
 *	  Whether an envelope given to secret_decrypt() is a stored secret's,
 *	  so that the read is recorded.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/parallel.h"
#include "access/xact.h"
#include "access/table.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/uuid.h"

#include "audit/audit.h"
#include "cache/coherence.h"
#include "crypto/se_crypto.h"
#include "secrets/envelope_sql.h"

/*
 * secret_decrypt() is a primitive for any table, and a reader may call it
 * on a stored secret's columns (or on copies of them): the AAD binds an
 * envelope to its id and name, so a decrypt that succeeds with a stored
 * secret's id read that secret.  To tell without a table probe per call
 * (a bulk decrypt of an application table must stay cheap), each backend
 * keeps the set of stored ids, read with a fresh snapshot (no row-level
 * security: what counts is that the secret is stored, not who may see its
 * row) and read again after the cache coherence generation moves, which
 * every committed write of the table, reset or role change does
 * (coherence.c).  Parallel workers decide alike; their records carry no
 * client address (a worker has none).
 */
typedef struct StoredId
{
	uint8		id[SE_AUDIT_UUID_LEN];
} StoredId;

static HTAB *stored_ids = NULL;
static uint64 stored_ids_generation = 0;

static void
load_stored_ids(void)
{
	Oid			relid = se_secrets_relid();
	uint64		generation = se_coherence_ticket();
	HASHCTL		ctl;
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tuple;
	Snapshot	snapshot;
	AttrNumber	attnum;

	if (stored_ids != NULL)
		hash_destroy(stored_ids);
	stored_ids = NULL;
	ctl.keysize = SE_AUDIT_UUID_LEN;
	ctl.entrysize = sizeof(StoredId);
	ctl.hcxt = TopMemoryContext;
	stored_ids = hash_create("secretenv stored ids", 256, &ctl,
							 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	stored_ids_generation = generation;
	if (!OidIsValid(relid))
		return;
	attnum = get_attnum(relid, "secret_id");
	if (attnum == InvalidAttrNumber)
		return;
	rel = table_open(relid, AccessShareLock);
	/* Parallel mode (a worker, or a leader of one) cannot take a new snapshot. */
	snapshot = RegisterSnapshot(!IsInParallelMode() ? GetLatestSnapshot() :
								ActiveSnapshotSet() ? GetActiveSnapshot() :
								GetTransactionSnapshot());
	scan = systable_beginscan(rel, InvalidOid, false, snapshot, 0, NULL);
	while (HeapTupleIsValid(tuple = systable_getnext(scan)))
	{
		bool		isnull;
		Datum		d = heap_getattr(tuple, attnum, RelationGetDescr(rel), &isnull);

		if (!isnull)
			(void) hash_search(stored_ids, DatumGetUUIDP(d)->data, HASH_ENTER, NULL);
	}
	systable_endscan(scan);
	UnregisterSnapshot(snapshot);
	table_close(rel, AccessShareLock);
	/* A write processed while reading: read again at the next call. */
	if (se_coherence_ticket() != generation)
		stored_ids_generation = 0;
}

/* The 16 bytes of a canonical uuid text (as the AAD of a uuid id holds it). */
static bool
parse_uuid(const char *s, int len, uint8 *out)
{
	int			n = 0;

	if (len != UUID_TEXT_LEN)
		return false;
	for (int i = 0; i < len; i++)
	{
		int			hi,
					lo;

		if (i == 8 || i == 13 || i == 18 || i == 23)
		{
			if (s[i] != '-')
				return false;
			continue;
		}
		if (i + 1 >= len)
			return false;
		hi = se_hex_digit(s[i]);
		lo = se_hex_digit(s[i + 1]);
		if (hi < 0 || lo < 0)
			return false;
		out[n++] = (uint8) (hi << 4 | lo);
		i++;
	}
	return n == SE_AUDIT_UUID_LEN;
}

bool
se_audit_decrypt_prepare(SeAuditRecord *rec, const char *id, int idlen,
						 const char *name, int namelen)
{
	uint8		uuid[SE_AUDIT_UUID_LEN];

	if (se_audit_level != SE_AUDIT_READS || !parse_uuid(id, idlen, uuid))
		return false;
	if (stored_ids == NULL || stored_ids_generation != se_coherence_ticket())
		load_stored_ids();
	if (hash_search(stored_ids, uuid, HASH_FIND, NULL) == NULL)
		return false;
	return se_audit_prepare(rec, SE_AUDIT_READ, SE_VIA_DECRYPT, uuid, name, namelen);
}
