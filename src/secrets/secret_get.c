/*-------------------------------------------------------------------------
 *
 * secret_get.c
 *	  secret_get(): read a secret from secretenv.secrets through the cache.
 *
 * The read path.  Privileges are checked first, on every call, for the
 * calling user exactly as a SELECT of the columns secret_get reads would
 * check them (their outcome remembered per user until an invalidation, see
 * check_access).  Then the credential cache may answer (coherence.h says when;
 * entries are keyed by the calling user).  Otherwise the row is read with
 * the caller's snapshot:
 *	- without row-level security for the caller, directly through the
 *	  unique btree index on secret_name (one index probe and one heap fetch,
 *	  as an indexed SELECT does, minus parsing and planning; the index
 *	  scan takes the SSI predicate locks a SELECT would);
 *	- with row-level security, through one fixed SPI query, so that the
 *	  caller's policies are applied by the planner exactly as for a SELECT.
 * A row the caller cannot see is "does not exist" (P0002) either way.
 * The value read is cached only when coherence.c allows it.
 *
 * Names are resolved independently of search_path: the table by the OID
 * of the schema secretenv (coherence.c), its index and columns from the
 * table's own relcache entry.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relscan.h"
#include "access/skey.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_am_d.h"
#include "catalog/pg_class.h"
#include "catalog/pg_opfamily_d.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/rls.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/uuid.h"

#include "audit/audit.h"
#include "cache/cache.h"
#include "cache/coherence.h"
#include "keys/key_health.h"
#include "pg_compat.h"
#include "redaction/redact.h"
#include "se_messages.h"
#include "secrets/access_rules.h"
#include "secrets/envelope_sql.h"

/* The columns secret_get reads, in the order of the SPI query below. */
enum
{
	COL_ID,
	COL_VALUE,
	COL_WRAPPED,
	COL_VERSION,
	COL_NAME,
	NUM_COLS
};
static const char *const column_names[NUM_COLS] = {
	"secret_id", "encrypted_value", "wrapped_dek", "kek_version", "secret_name"
};

/*
 * Where things are in secretenv.secrets, resolved again after any
 * invalidation that dropped the cache (the table, its index or a column may
 * have changed).
 */
typedef struct SecretsLayout
{
	Oid			relid;
	uint64		generation;
	Oid			indexoid;		/* unique btree on secret_name, or InvalidOid */
	AttrNumber	attnum[NUM_COLS];
	/* 1.2's columns (secret versions), InvalidAttrNumber in a 1.0 or 1.1 table */
	AttrNumber	deleted_att;
	AttrNumber	version_att;
} SecretsLayout;

static SecretsLayout layout = {InvalidOid, 0, InvalidOid};
static SPIPlanPtr rls_plan = NULL;
static bool rls_plan_versioned = false;

/*
 * Is this index usable to look a name up with text equality: a valid,
 * unique, non-partial btree whose only key is secret_name under text_ops
 * and the column's collation?
 */
static bool
is_name_index(Relation index, AttrNumber name_att, Oid collation)
{
	Form_pg_index form = index->rd_index;

	return form->indisunique && form->indisvalid && form->indimmediate &&
		index->rd_rel->relam == BTREE_AM_OID &&
		form->indnkeyatts == 1 &&
		form->indkey.values[0] == name_att &&
		RelationGetIndexExpressions(index) == NIL &&
		RelationGetIndexPredicate(index) == NIL &&
		index->rd_opfamily[0] == TEXT_BTREE_FAM_OID &&
		index->rd_indcollation[0] == collation;
}

static void
refresh_layout(Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	List	   *indexes;
	ListCell   *lc;
	Oid			name_collation = InvalidOid;

	if (layout.relid == RelationGetRelid(rel) &&
		layout.generation == se_coherence_ticket())
		return;

	layout.relid = InvalidOid;
	for (int c = 0; c < NUM_COLS; c++)
	{
		layout.attnum[c] = InvalidAttrNumber;
		for (int i = 0; i < desc->natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, i);

			if (!att->attisdropped && strcmp(NameStr(att->attname), column_names[c]) == 0)
			{
				layout.attnum[c] = att->attnum;
				if (c == COL_NAME)
					name_collation = att->attcollation;
				break;
			}
		}
		if (layout.attnum[c] == InvalidAttrNumber)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("column \"%s\" of relation \"secretenv.secrets\" does not exist",
							column_names[c])));
	}

	layout.deleted_att = InvalidAttrNumber;
	layout.version_att = InvalidAttrNumber;
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped)
			continue;
		if (strcmp(NameStr(att->attname), "deleted_at") == 0)
			layout.deleted_att = att->attnum;
		else if (strcmp(NameStr(att->attname), "current_version") == 0 &&
				 att->atttypid == INT4OID)
			layout.version_att = att->attnum;
	}

	layout.indexoid = InvalidOid;
	indexes = RelationGetIndexList(rel);
	foreach(lc, indexes)
	{
		Relation	index = index_open(lfirst_oid(lc), AccessShareLock);
		bool		usable = is_name_index(index, layout.attnum[COL_NAME], name_collation);

		index_close(index, NoLock);
		if (usable)
		{
			layout.indexoid = lfirst_oid(lc);
			break;
		}
	}
	list_free(indexes);
	layout.relid = RelationGetRelid(rel);
	layout.generation = se_coherence_ticket();
}

/*
 * The checks of a SELECT of secret_get's columns: table-level SELECT, or
 * SELECT on each column read.
 */
static void
check_read_privileges(Oid relid, Oid userid)
{
	static const char *const needed[] = {
		"secret_id", "encrypted_value", "wrapped_dek", "kek_version", "secret_name"
	};

	if (pg_class_aclcheck(relid, userid, ACL_SELECT) == ACLCHECK_OK)
		return;
	for (int i = 0; i < lengthof(needed); i++)
	{
		AttrNumber	attnum = get_attnum(relid, needed[i]);

		if (attnum == InvalidAttrNumber ||
			pg_attribute_aclcheck(relid, attnum, userid, ACL_SELECT) != ACLCHECK_OK)
			aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_TABLE, "secrets");
	}
}

/*
 * The outcome of the privilege and row-level security checks for one user,
 * remembered while nothing they depend on can have changed: every change
 * of the table's pg_class row (its ACL, owner, RLS flags) or of a column's
 * ACL sends a relcache invalidation of the table, and role attributes and
 * memberships have syscache callbacks; coherence.c bumps its generation for
 * all of them.  Failures are never remembered.  row_security is a plain
 * setting and is looked at on every call.
 */
typedef struct AccessMemo
{
	Oid			userid;
	Oid			relid;
	uint64		generation;
	bool		rls_enabled;	/* row-level security applies to the caller */
	bool		rls;			/* ... and some policy could hide a row from it */
} AccessMemo;

static AccessMemo access_memo = {InvalidOid, InvalidOid, 0, false, false};

/* Check the caller may read the table; returns whether its policies apply. */
static bool
check_access(Oid relid, Oid userid)
{
	uint64		generation = se_coherence_ticket();

	if (access_memo.userid == userid && access_memo.relid == relid &&
		access_memo.generation == generation)
	{
		/* Refused like a SELECT when policies apply and row_security is off. */
		if (access_memo.rls_enabled && !row_security)
			(void) check_enable_rls(relid, InvalidOid, false);
		return access_memo.rls;
	}

	access_memo.userid = InvalidOid;
	check_read_privileges(relid, userid);
	access_memo.rls_enabled = check_enable_rls(relid, InvalidOid, false) == RLS_ENABLED;

	/*
	 * secretenv 1.2 enables row-level security itself; while only its own
	 * policies exist and the caller has no access rules they hide nothing,
	 * and the index path returns what the query would.
	 */
	access_memo.rls = access_memo.rls_enabled && se_access_policies_bind(userid);
	/* Sampled before the checks: an invalidation they processed forces a redo. */
	access_memo.generation = generation;
	access_memo.relid = relid;
	access_memo.userid = userid;
	return access_memo.rls;
}

static void
report_missing(text *name)
{
	ereport(ERROR,
			(errcode(ERRCODE_NO_DATA_FOUND),
			 errmsg("secret \"%s\" does not exist", text_to_cstring(name))));
}

/* Decrypt a row's fields; its id goes into the audit record first. */
static text *
decrypt_fields(Datum id, Datum value, Datum wrapped, Datum version, text *name,
			   SeAuditRecord *audit)
{
	char		idtext[UUID_TEXT_LEN];
	bytea	   *v = DatumGetByteaPP(value);
	bytea	   *w = DatumGetByteaPP(wrapped);

	audit->has_id = true;
	memcpy(audit->id, DatumGetUUIDP(id)->data, SE_AUDIT_UUID_LEN);
	se_uuid_to_text(DatumGetUUIDP(id), idtext);
	return se_decrypt_to_text((const uint8_t *) VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v),
							  (const uint8_t *) VARDATA_ANY(w), VARSIZE_ANY_EXHDR(w),
							  DatumGetInt32(version), idtext, UUID_TEXT_LEN,
							  VARDATA_ANY(name), VARSIZE_ANY_EXHDR(name));
}

/*
 * Whether a row of 1.2's table is deleted; if not, its current version
 * goes into the audit record.
 */
static bool
deleted_or_version(TupleTableSlot *slot, SeAuditRecord *audit)
{
	bool		isnull;
	Datum		v;

	if (layout.deleted_att != InvalidAttrNumber)
	{
		(void) slot_getattr(slot, layout.deleted_att, &isnull);
		if (!isnull)
			return true;
	}
	if (layout.version_att != InvalidAttrNumber)
	{
		v = slot_getattr(slot, layout.version_att, &isnull);
		if (!isnull)
			audit->version = DatumGetInt32(v);
	}
	return false;
}

/*
 * Read through the unique index with the caller's snapshot.  Returns the
 * plaintext (in the current memory context) and the row version's tid, or
 * NULL when no visible row has that name.
 */
static text *
read_by_index(Relation rel, text *name, TupleTableSlot *slot, ItemPointer tid,
			  SeAuditRecord *audit)
{
	Relation	index = index_open(layout.indexoid, AccessShareLock);
	IndexScanDesc scan;
	ScanKeyData key;
	text	   *result = NULL;

	ScanKeyEntryInitialize(&key, 0, 1, BTEqualStrategyNumber, InvalidOid,
						   index->rd_indcollation[0], F_TEXTEQ, PointerGetDatum(name));
	scan = index_beginscan_compat(rel, index, GetActiveSnapshot(), 1, 0);
	index_rescan(scan, &key, 1, NULL, 0);
	if (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		bool		isnull[NUM_COLS];
		Datum		val[NUM_COLS];

		for (int c = 0; c < COL_NAME; c++)
		{
			val[c] = slot_getattr(slot, layout.attnum[c], &isnull[c]);
			if (isnull[c])
				elog(ERROR, "null %s in secretenv.secrets", column_names[c]);
		}
		*tid = slot->tts_tid;
		/* A deleted secret (secret_delete, recovery window) is absent. */
		if (deleted_or_version(slot, audit))
		{
			index_endscan(scan);
			index_close(index, NoLock);
			return NULL;
		}
		result = decrypt_fields(val[COL_ID], val[COL_VALUE], val[COL_WRAPPED],
								val[COL_VERSION], name, audit);
	}
	index_endscan(scan);
	index_close(index, NoLock);
	return result;
}

/*
 * Read through SPI, which applies the caller's row-level security
 * policies.  Same result as read_by_index.
 */
static text *
read_by_query(text *name, ItemPointer tid, SeAuditRecord *audit)
{
	Datum		args[1] = {PointerGetDatum(name)};
	MemoryContext caller_cxt = CurrentMemoryContext;
	HeapTuple	tuple;
	TupleDesc	desc;
	bool		isnull;
	text	   *result = NULL;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	/* A table of 1.2 hides deleted secrets and numbers its versions. */
	if (rls_plan != NULL && rls_plan_versioned != (layout.deleted_att != InvalidAttrNumber))
	{
		SPI_freeplan(rls_plan);
		rls_plan = NULL;
	}
	if (rls_plan == NULL)
	{
		Oid			argtypes[1] = {TEXTOID};
		bool		versioned = layout.deleted_att != InvalidAttrNumber;
		SPIPlanPtr	plan = SPI_prepare(versioned ?
									   "SELECT secret_id, encrypted_value, wrapped_dek, kek_version, ctid, "
									   "current_version "
									   "FROM secretenv.secrets "
									   "WHERE secret_name OPERATOR(pg_catalog.=) $1 AND deleted_at IS NULL" :
									   "SELECT secret_id, encrypted_value, wrapped_dek, kek_version, ctid "
									   "FROM secretenv.secrets "
									   "WHERE secret_name OPERATOR(pg_catalog.=) $1",
									   1, argtypes);

		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		rls_plan = plan;
		rls_plan_versioned = versioned;
	}
	if (SPI_execute_plan(rls_plan, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read secretenv.secrets");
	if (SPI_processed > 0)
	{
		MemoryContext spi_cxt;

		tuple = SPI_tuptable->vals[0];
		desc = SPI_tuptable->tupdesc;
		ItemPointerCopy((ItemPointer) DatumGetPointer(SPI_getbinval(tuple, desc, 5, &isnull)), tid);
		if (rls_plan_versioned)
			audit->version = DatumGetInt32(SPI_getbinval(tuple, desc, 6, &isnull));
		spi_cxt = MemoryContextSwitchTo(caller_cxt);
		result = decrypt_fields(SPI_getbinval(tuple, desc, 1, &isnull),
								SPI_getbinval(tuple, desc, 2, &isnull),
								SPI_getbinval(tuple, desc, 3, &isnull),
								SPI_getbinval(tuple, desc, 4, &isnull),
								name, audit);
		MemoryContextSwitchTo(spi_cxt);
	}
	SPI_finish();
	return result;
}

/*
 * Return the decrypted value of a stored secret, from the cache when fresh.
 * Every call is audited, hit or miss: the record is prepared before
 * anything is read, and emitted once the outcome is known: before the
 * plaintext is returned, or as the error leaves (denied, not_found,
 * failed).
 */
PG_FUNCTION_INFO_V1(secret_get);
Datum
secret_get(PG_FUNCTION_ARGS)
{
	text	   *name = PG_GETARG_TEXT_PP(0);
	const char *namep = VARDATA_ANY(name);
	int			namelen = VARSIZE_ANY_EXHDR(name);
	Oid			userid = GetUserId();
	SeAuditRecord audit;
	bool		audited;
	text	   *volatile result = NULL;

	audited = se_audit_prepare(&audit, SE_AUDIT_READ, SE_VIA_SECRET_GET, NULL, namep, namelen);
	/* Known once the row (or the cache entry it filled) is read; cached either way. */
	audit.version = 0;
	PG_TRY();
	{
		bool		may_serve;
		bool		rls;
		bool		fresh = false;
		bool		pushed_snapshot = false;
		Oid			relid;
		Relation	rel;
		TupleTableSlot *slot;
		ItemPointerData tid;
		uint64		ticket;
		text	   *value = NULL;

		may_serve = se_coherence_begin();
		se_key_health_warn_once();
		/* What the statement does with the value must not print it. */
		se_redact_note_yield();

		relid = se_secrets_relid();
		if (!OidIsValid(relid))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_TABLE),
					 errmsg("relation \"secretenv.secrets\" does not exist")));

		/* Hit or miss: the access rules must be enforced (55S01) ... */
		se_access_check_enforced(userid);
		/* ... and the caller must be allowed to read the row itself. */
		rls = check_access(relid, userid);

		if (may_serve)
		{
			value = se_cache_lookup(userid, namep, namelen, audit.id, &audit.version);
			if (value != NULL)
			{
				audit.has_id = true;
				audit.via = SE_VIA_CACHE;
			}
		}

		if (value == NULL)
		{
			/* The caller's snapshot; a top-level call without one gets the transaction's. */
			if (!ActiveSnapshotSet())
			{
				PushActiveSnapshot(GetTransactionSnapshot());
				pushed_snapshot = true;
			}
			ticket = se_coherence_ticket();
			rel = table_open(relid, AccessShareLock);
			refresh_layout(rel);
			slot = table_slot_create(rel, NULL);
			if (!rls && OidIsValid(layout.indexoid))
				value = read_by_index(rel, name, slot, &tid, &audit);
			else
				value = read_by_query(name, &tid, &audit);
			if (value == NULL)
				report_missing(name);

			/* Only unique names are cached: see coherence.c. */
			if (may_serve && OidIsValid(layout.indexoid))
				fresh = se_coherence_row_is_latest(rel, &tid, slot);
			ExecDropSingleTupleTableSlot(slot);
			table_close(rel, NoLock);
			if (pushed_snapshot)
				PopActiveSnapshot();

			if (fresh && se_coherence_may_fill(ticket))
				se_cache_insert(userid, namep, namelen, audit.id, audit.version,
								VARDATA(value), VARSIZE(value) - VARHDRSZ);
		}
		result = value;
	}
	PG_CATCH();
	{
		if (audited)
			se_audit_emit(&audit, se_audit_outcome_of_error(geterrcode()), false);
		PG_RE_THROW();
	}
	PG_END_TRY();

	/* Strict mode: returns once the record is durable, or raises 55S02. */
	if (audited)
		se_audit_emit(&audit, SE_AUDIT_OK, true);
	PG_RETURN_TEXT_P(result);
}
