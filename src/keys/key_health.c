/*-------------------------------------------------------------------------
 *
 * key_health.c
 *	  Key health: does the configured KEK open the rows stored in each
 *	  database?
 *
 * A server restarted with another passphrase (or salt) still starts, and
 * every later read fails.  To say so at once, the first secretenv call of
 * a backend after its key configuration is loaded or changed raises a
 * WARNING naming each configured version whose KEK does not open a stored
 * wrapped DEK of that version, and writes under a current KEK that does not
 * open its own version's rows are refused (fail closed): a row written
 * under the wrong KEK would be lost once the right passphrase is back.
 *
 * Results are per database, since each database holds its own rows, and
 * each version's result carries the fingerprint of the KEK it was computed
 * with (an HMAC of the KEK, src/crypto/fingerprint.c): a process uses a
 * result only if its own KEK for that version has the same fingerprint,
 * which makes results comparable across processes and reloads without
 * sharing any key.
 *
 * Where the check runs.  Reading sample rows needs SQL, and the caller may
 * lack SELECT on the table; in 1.0 the check ran as the table owner while
 * names and operators resolved through the caller's search_path, which let
 * a caller's operator run with the owner's rights.  Now:
 *	  - with shared_preload_libraries, a background worker
 *		(key_health_worker.c) checks every database that has the extension
 *		at start, after every reload that changes the keys, and after
 *		changes to secretenv.secrets (at most once a second), and leaves the
 *		result, with rows per KEK version, in shared memory; backends only
 *		read it;
 *	  - when no usable result exists (no preload, or a backend that is
 *		faster than the worker), the backend runs the same check itself,
 *		as the table owner, in a security-restricted operation, with
 *		search_path pinned to pg_catalog, pg_temp, through fixed statements
 *		whose every name and operator is schema-qualified: nothing the
 *		caller can create is ever resolved.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/parallel.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "crypto/se_crypto.h"
#include "keys/aead_engine.h"
#include "keys/crypto_errors.h"
#include "keys/key_health.h"
#include "keys/keyring.h"
#include "se_messages.h"

#define HEALTH_MAX_DATABASES 64
#define HEALTH_MAX_VERSIONS 8

typedef enum KekState
{
	KEK_STATE_NO_ROWS,			/* configured; no stored row of its version */
	KEK_STATE_OPENS,			/* opens a stored wrapped DEK of its version */
	KEK_STATE_DOES_NOT_OPEN,	/* does not: wrong passphrase or salt */
	KEK_STATE_NOT_CONFIGURED,	/* rows of a version no KEK is configured for */
	KEK_STATE_UNAVAILABLE		/* configured, but could not be obtained */
} KekState;

static const char *const kek_state_names[] = {
	"no rows", "opens", "does not open", "not configured", "unavailable"
};

typedef struct VersionHealth
{
	int32		kek_version;
	int64		rows;			/* -1 when not counted */
	uint8		fingerprint[SE_KEK_FINGERPRINT_LEN];	/* of the KEK tried */
	uint8		state;			/* KekState */
} VersionHealth;

typedef struct DatabaseHealth
{
	Oid			dboid;			/* InvalidOid: a free slot */
	bool		recheck;		/* the table changed since the last check */
	bool		counted;		/* rows counted, every stored version listed */
	bool		truncated;		/* more stored versions than fit */
	TimestampTz checked_at;
	int			nversions;
	VersionHealth versions[HEALTH_MAX_VERSIONS];
} DatabaseHealth;

typedef struct HealthShared
{
	LWLock	   *lock;
	pg_atomic_uint64 serial;	/* bumped by every publication */
	Latch	   *launcher;		/* the worker launcher's latch, while it runs */
	DatabaseHealth databases[HEALTH_MAX_DATABASES];
} HealthShared;

/* NULL without shared_preload_libraries: then every result is local. */
static HealthShared *health = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* This backend's result for its database, and what it was checked against. */
static DatabaseHealth local_result;
static bool local_valid = false;
static uint64 seen_generation = 0;
static uint64 seen_serial = 0;

/* The versions this backend last warned about, and under which keys. */
static int32 warned_versions[HEALTH_MAX_VERSIONS];
static int	nwarned = 0;
static uint64 warned_generation = 0;

static bool table_changed_in_xact = false;

#define COUNT_SQL \
	"SELECT s.kek_version, pg_catalog.count(*) FROM secretenv.secrets s " \
	"GROUP BY s.kek_version ORDER BY s.kek_version"
#define SAMPLE_SQL \
	"SELECT s.wrapped_dek FROM secretenv.secrets s " \
	"WHERE s.kek_version OPERATOR(pg_catalog.=) $1 LIMIT 1"
/* 1.2: the kept versions of secrets (secret_versions) count too. */
#define COUNT_VERSIONS_SQL \
	"SELECT e.kek_version, pg_catalog.count(*) FROM " \
	"(SELECT s.kek_version FROM secretenv.secrets s " \
	" UNION ALL SELECT v.kek_version FROM secretenv.secret_versions v) e " \
	"GROUP BY e.kek_version ORDER BY e.kek_version"
#define SAMPLE_VERSIONS_SQL \
	"(SELECT s.wrapped_dek FROM secretenv.secrets s " \
	" WHERE s.kek_version OPERATOR(pg_catalog.=) $1 LIMIT 1) " \
	"UNION ALL " \
	"(SELECT v.wrapped_dek FROM secretenv.secret_versions v " \
	" WHERE v.kek_version OPERATOR(pg_catalog.=) $1 LIMIT 1) LIMIT 1"

/* Whether this database's store keeps versions (1.2), set by compute(). */
static bool with_versions = false;

/*
 * OID of secretenv.secrets in this database, found without search_path, or
 * InvalidOid when the extension is not installed here: a look-alike table
 * in a schema of that name is none of our business.
 */
static Oid
secrets_relid(void)
{
	Oid			nsp;

	if (!OidIsValid(get_extension_oid("secretenv", true)))
		return InvalidOid;
	nsp = get_namespace_oid("secretenv", true);
	return OidIsValid(nsp) ? get_relname_relid("secrets", nsp) : InvalidOid;
}

static Oid
relation_owner(Oid relid)
{
	HeapTuple	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			owner;

	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
	ReleaseSysCache(tuple);
	return owner;
}

static VersionHealth *
find_version(DatabaseHealth *r, int32 version)
{
	for (int i = 0; i < r->nversions; i++)
		if (r->versions[i].kek_version == version)
			return &r->versions[i];
	return NULL;
}

static VersionHealth *
add_version(DatabaseHealth *r, int32 version, int64 rows)
{
	VersionHealth *v;

	if (r->nversions >= HEALTH_MAX_VERSIONS)
	{
		r->truncated = true;
		return NULL;
	}
	v = &r->versions[r->nversions++];
	memset(v, 0, sizeof(*v));
	v->kek_version = version;
	v->rows = rows;
	return v;
}

/* The configured versions: the current one, then the previous one if any. */
static int
configured_versions(int32 versions[2])
{
	int			n = 0;
	int32		previous = se_keyring_previous_version();

	versions[n++] = se_keyring_current_version();
	if (previous > 0 && previous != versions[0])
		versions[n++] = previous;
	return n;
}

/* Try this process's KEK of v->kek_version on a sample wrapped DEK of it. */
static void
try_sample(VersionHealth *v)
{
	Oid			argtypes[1] = {INT4OID};
	Datum		args[1] = {Int32GetDatum(v->kek_version)};
	const uint8_t *kek;
	bytea	   *wrapped;
	bool		isnull;
	uint8_t		dek[SE_KEY_LEN];
	se_status	status;

	if (!se_keyring_has_version(v->kek_version))
	{
		v->state = KEK_STATE_NOT_CONFIGURED;
		return;
	}
	kek = se_keyring_kek_if_available(v->kek_version);
	if (kek == NULL || se_kek_fingerprint(kek, v->fingerprint) != SE_OK)
	{
		v->state = KEK_STATE_UNAVAILABLE;
		return;
	}

	if (SPI_execute_with_args(with_versions ? SAMPLE_VERSIONS_SQL : SAMPLE_SQL, 1, argtypes, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read secretenv.secrets");
	if (SPI_processed == 0)
	{
		v->state = KEK_STATE_NO_ROWS;
		return;
	}
	wrapped = DatumGetByteaPP(SPI_getbinval(SPI_tuptable->vals[0],
											SPI_tuptable->tupdesc, 1, &isnull));
	status = se_unwrap_dek(se_engine(), kek, (const uint8_t *) VARDATA_ANY(wrapped),
						   VARSIZE_ANY_EXHDR(wrapped), dek);
	se_wipe(dek, sizeof(dek));
	if (status == SE_ERR_OPENSSL || status == SE_ERR_NOMEM)
		se_report_crypto_failure(status, v->kek_version, "check a KEK");
	v->state = status == SE_OK ? KEK_STATE_OPENS : KEK_STATE_DOES_NOT_OPEN;
}

/*
 * The SQL part of a check.  With count_rows, every stored version is
 * counted and tried (the worker's inventory); otherwise only the
 * configured versions are tried, with one indexed-or-not LIMIT 1 each.
 */
static void
check_rows(bool count_rows, DatabaseHealth *r)
{
	int32		versions[2];
	int			nconfigured = configured_versions(versions);

	if (count_rows)
	{
		uint64		nstored;
		SPITupleTable *counts;

		if (SPI_execute(with_versions ? COUNT_VERSIONS_SQL : COUNT_SQL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read secretenv.secrets");
		/* Keep the counts: try_sample runs statements of its own. */
		counts = SPI_tuptable;
		nstored = SPI_processed;
		for (uint64 i = 0; i < nstored; i++)
		{
			bool		isnull;
			int32		version = DatumGetInt32(SPI_getbinval(counts->vals[i], counts->tupdesc, 1, &isnull));
			int64		rows = DatumGetInt64(SPI_getbinval(counts->vals[i], counts->tupdesc, 2, &isnull));

			(void) add_version(r, version, rows);
		}
		r->counted = true;
	}
	for (int i = 0; i < nconfigured; i++)
		if (find_version(r, versions[i]) == NULL)
			(void) add_version(r, versions[i], count_rows ? 0 : -1);
	for (int i = 0; i < r->nversions; i++)
		try_sample(&r->versions[i]);
}

/*
 * Check this database's rows in the current transaction.  The statements
 * run as the owner of secretenv.secrets (the caller may not read it) in a
 * security-restricted operation, with search_path pinned for their
 * duration: a transaction or subtransaction abort restores both the user
 * and the GUC nest level, so no PG_TRY is needed.
 */
static void
compute(bool count_rows, Oid relid, DatabaseHealth *r)
{
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;

	memset(r, 0, sizeof(*r));
	r->dboid = MyDatabaseId;
	with_versions = OidIsValid(get_relname_relid("secret_versions", get_rel_namespace(relid)));

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(relation_owner(relid),
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	check_rows(count_rows, r);
	SPI_finish();

	AtEOXact_GUC(true, save_nestlevel);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	r->checked_at = GetCurrentTimestamp();
}

/* Shared-memory slot of a database; with create, a new or the oldest one. */
static DatabaseHealth *
shared_slot(Oid dboid, bool create)
{
	DatabaseHealth *oldest = NULL;

	for (int i = 0; i < HEALTH_MAX_DATABASES; i++)
	{
		DatabaseHealth *d = &health->databases[i];

		if (d->dboid == dboid)
			return d;
		if (oldest == NULL || d->dboid == InvalidOid ||
			(oldest->dboid != InvalidOid && d->checked_at < oldest->checked_at))
			oldest = d;
	}
	if (!create)
		return NULL;
	memset(oldest, 0, sizeof(*oldest));
	oldest->dboid = dboid;
	return oldest;
}

static void
publish(const DatabaseHealth *r)
{
	local_result = *r;
	local_valid = true;
	if (health == NULL)
		return;
	LWLockAcquire(health->lock, LW_EXCLUSIVE);
	*shared_slot(r->dboid, true) = *r;
	if (r->recheck && health->launcher != NULL)
		SetLatch(health->launcher);
	LWLockRelease(health->lock);
	pg_atomic_fetch_add_u64(&health->serial, 1);
}

static bool
read_shared(Oid dboid, DatabaseHealth *out)
{
	DatabaseHealth *d;

	LWLockAcquire(health->lock, LW_SHARED);
	d = shared_slot(dboid, false);
	if (d != NULL)
		*out = *d;
	LWLockRelease(health->lock);
	return d != NULL;
}

/*
 * Whether a result describes the keys of this process: for every configured
 * version, an entry tried with a KEK of the same fingerprint.  A version
 * whose KEK this process cannot obtain is not compared (the call that needs
 * it reports that failure itself).
 */
static bool
matches_my_keys(DatabaseHealth *r)
{
	int32		versions[2];
	int			n = configured_versions(versions);

	for (int i = 0; i < n; i++)
	{
		VersionHealth *v = find_version(r, versions[i]);
		const uint8_t *kek = se_keyring_kek_if_available(versions[i]);
		uint8		mine[SE_KEK_FINGERPRINT_LEN];

		if (kek == NULL)
			continue;
		if (v == NULL || v->state == KEK_STATE_NOT_CONFIGURED ||
			v->state == KEK_STATE_UNAVAILABLE ||
			se_kek_fingerprint(kek, mine) != SE_OK ||
			memcmp(mine, v->fingerprint, sizeof(mine)) != 0)
			return false;
	}
	return true;
}

/* WARNING for each configured version whose KEK does not open its rows. */
static void
warn_about(DatabaseHealth *r, uint64 generation)
{
	int32		unhealthy[HEALTH_MAX_VERSIONS];
	int			n = 0;

	for (int i = 0; i < r->nversions; i++)
		if (r->versions[i].state == KEK_STATE_DOES_NOT_OPEN)
			unhealthy[n++] = r->versions[i].kek_version;

	/* Once per backend for a given configuration and verdict. */
	if (generation == warned_generation && n == nwarned &&
		memcmp(unhealthy, warned_versions, n * sizeof(int32)) == 0)
		return;
	warned_generation = generation;
	nwarned = n;
	memcpy(warned_versions, unhealthy, n * sizeof(int32));

	for (int i = 0; i < n; i++)
		ereport(WARNING,
				(errcode(ERRCODE_SECRETENV_KEK_MISMATCH),
				 errmsg("the configured KEK of version %d does not open existing secrets",
						unhealthy[i]),
				 errdetail("A stored wrapped DEK of version %d does not open under the KEK now configured for it.",
						   unhealthy[i]),
				 errhint("The server was probably started with another passphrase or salt than the one that wrote these rows. "
						 "Restore that configuration and reload; secretenv.verify_secrets() lists every affected row.")));
}

/*
 * Make sure this backend holds a result for its database and its keys, and
 * warn about unhealthy versions once.  Cheap when nothing changed: two
 * comparisons and an atomic read.
 */
void
se_key_health_warn_once(void)
{
	uint64		generation = se_keyring_generation();
	uint64		serial = health ? pg_atomic_read_u64(&health->serial) : 0;
	Oid			relid;
	DatabaseHealth r;

	if (generation == seen_generation && serial == seen_serial)
		return;

	relid = secrets_relid();
	if (!OidIsValid(relid))
	{
		/* Extension not (yet) created here: nothing stored to check. */
		local_valid = false;
		return;
	}

	if (!(health != NULL && read_shared(MyDatabaseId, &r) && matches_my_keys(&r)))
	{
		/* A parallel worker never runs the check; its leader did. */
		if (IsParallelWorker())
			return;
		compute(false, relid, &r);
		/* Ask the worker to complete the inventory (rows per version). */
		r.recheck = true;
		publish(&r);
		if (health != NULL)
			serial = pg_atomic_read_u64(&health->serial);
	}
	local_result = r;
	local_valid = true;
	seen_generation = generation;
	seen_serial = serial;
	warn_about(&r, generation);
}

/*
 * Fail closed: refuse to wrap anything new under a current KEK that does
 * not open stored rows of its own version.  Such a row would be readable
 * only under the wrong passphrase, and lost once the right one is back.
 */
void
se_key_health_check_writable(void)
{
	int32		current = se_keyring_current_version();
	VersionHealth *v;

	se_key_health_warn_once();
	if (!local_valid)
		return;
	v = find_version(&local_result, current);
	if (v != NULL && v->state == KEK_STATE_DOES_NOT_OPEN)
		ereport(ERROR,
				(errcode(ERRCODE_SECRETENV_KEK_MISMATCH),
				 errmsg("refusing to encrypt under the KEK of version %d", current),
				 errdetail("The configured KEK of version %d does not open the secrets already stored under version %d; "
						   "a value written now would be unreadable once the right passphrase is restored.",
						   current, current),
				 errhint("Restore the passphrase and salt that wrote the existing rows and reload. "
						 "If that passphrase is lost for good, configure a new secretenv.kek_version instead.")));
}

/* secretenv.secrets changed in this transaction (statement trigger). */
void
se_key_health_table_changed(void)
{
	table_changed_in_xact = true;
}

/* After a commit that changed the table, ask the worker to check again. */
static void
health_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT && table_changed_in_xact && health != NULL)
	{
		LWLockAcquire(health->lock, LW_EXCLUSIVE);
		shared_slot(MyDatabaseId, true)->recheck = true;
		if (health->launcher != NULL)
			SetLatch(health->launcher);
		LWLockRelease(health->lock);
	}
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
		table_changed_in_xact = false;
}

/*
 * The worker's check of the database it is connected to: every stored
 * version counted and tried, published for every backend, and logged.
 */
void
se_key_health_check_database(void)
{
	Oid			relid = secrets_relid();
	DatabaseHealth r;

	if (!OidIsValid(relid))
	{
		se_key_health_forget_database(MyDatabaseId);
		return;
	}
	compute(true, relid, &r);
	publish(&r);
	for (int i = 0; i < r.nversions; i++)
		if (r.versions[i].state == KEK_STATE_DOES_NOT_OPEN)
			ereport(WARNING,
					(errcode(ERRCODE_SECRETENV_KEK_MISMATCH),
					 errmsg("the configured KEK of version %d does not open existing secrets in database \"%s\"",
							r.versions[i].kek_version, get_database_name(MyDatabaseId)),
					 errhint("Restore the passphrase and salt that wrote these rows and reload.")));
}

void
se_key_health_forget_database(Oid dboid)
{
	DatabaseHealth *d;

	if (health == NULL)
		return;
	LWLockAcquire(health->lock, LW_EXCLUSIVE);
	d = shared_slot(dboid, false);
	if (d != NULL)
		memset(d, 0, sizeof(*d));
	LWLockRelease(health->lock);
	pg_atomic_fetch_add_u64(&health->serial, 1);
}

void
se_key_health_set_launcher(Latch *latch)
{
	LWLockAcquire(health->lock, LW_EXCLUSIVE);
	health->launcher = latch;
	LWLockRelease(health->lock);
}

/* Databases whose table changed since their last check; clears the marks. */
int
se_key_health_take_rechecks(Oid *dboids, int max)
{
	int			n = 0;

	LWLockAcquire(health->lock, LW_EXCLUSIVE);
	for (int i = 0; i < HEALTH_MAX_DATABASES && n < max; i++)
	{
		DatabaseHealth *d = &health->databases[i];

		if (d->dboid != InvalidOid && d->recheck)
		{
			d->recheck = false;
			dboids[n++] = d->dboid;
		}
	}
	LWLockRelease(health->lock);
	return n;
}

/* One row per database and stored KEK version, from the latest checks. */
PG_FUNCTION_INFO_V1(secret_key_inventory);
Datum
secret_key_inventory(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	DatabaseHealth *results;
	int			nresults = 0;

	InitMaterializedSRF(fcinfo, 0);
	se_key_health_warn_once();

	results = palloc(sizeof(DatabaseHealth) * HEALTH_MAX_DATABASES);
	if (health != NULL)
	{
		LWLockAcquire(health->lock, LW_SHARED);
		for (int i = 0; i < HEALTH_MAX_DATABASES; i++)
			if (health->databases[i].dboid != InvalidOid)
				results[nresults++] = health->databases[i];
		LWLockRelease(health->lock);
	}
	else if (local_valid)
		results[nresults++] = local_result;

	for (int i = 0; i < nresults; i++)
	{
		char	   *dbname = get_database_name(results[i].dboid);

		if (dbname == NULL)
			continue;			/* dropped since its check */
		for (int j = 0; j < results[i].nversions; j++)
		{
			VersionHealth *v = &results[i].versions[j];
			Datum		values[6];
			bool		nulls[6] = {false, false, false, false, false, false};

			values[0] = CStringGetTextDatum(dbname);
			values[1] = Int32GetDatum(v->kek_version);
			values[2] = Int64GetDatum(v->rows);
			nulls[2] = v->rows < 0;
			values[3] = CStringGetTextDatum(kek_state_names[v->state]);
			values[4] = BoolGetDatum(results[i].counted && !results[i].truncated);
			values[5] = TimestampTzGetDatum(results[i].checked_at);
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
	}
	return (Datum) 0;
}

static void
health_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(HealthShared)));
	RequestNamedLWLockTranche("secretenv key health", 1);
}

static void
health_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	health = ShmemInitStruct("secretenv key health", sizeof(HealthShared), &found);
	if (!found)
	{
		memset(health, 0, sizeof(HealthShared));
		health->lock = &(GetNamedLWLockTranche("secretenv key health"))->lock;
		pg_atomic_init_u64(&health->serial, 1);
	}
	LWLockRelease(AddinShmemInitLock);
}

void
se_key_health_init(void)
{
	RegisterXactCallback(health_xact_callback, NULL);
	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = health_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = health_shmem_startup;
}
