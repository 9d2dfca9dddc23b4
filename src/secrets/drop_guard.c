/*-------------------------------------------------------------------------
 *
 * drop_guard.c
 *	  Refuse to drop secretenv while secretenv.secrets holds secrets.
 *
 * DROP EXTENSION secretenv takes secretenv.secrets, every stored secret,
 * with it; so do DROP SCHEMA secretenv CASCADE and DROP OWNED BY the role
 * that owns the extension.  None of them asks.  secretenv_drop_guard, an
 * event trigger that the install script creates, runs this function at
 * ddl_command_start of those three commands and refuses while the table
 * holds a row, unless the session has secretenv.allow_drop_with_secrets on
 * (a superuser-only setting, off by default, that only SET or the
 * connection's options can turn on).
 *
 * Why an event trigger, and why at ddl_command_start:
 *	- it is a catalog object of the database, so it fires in every session,
 *	  also in sessions that never loaded secretenv and in servers without
 *	  shared_preload_libraries: calling this function loads the library.  A
 *	  ProcessUtility hook would only exist where the library was loaded;
 *	- at sql_drop the table is already gone, and so is the event trigger
 *	  itself when the extension is dropped (it is one of its members): it
 *	  would not even fire.  At ddl_command_start everything still exists.
 *
 * ddl_command_start sees only the parse tree, so the command's targets are
 * read from it: the extension or schema named secretenv, or a role that
 * owns the extension, its schema or its table.  The table is then locked
 * (as the drop would lock it anyway) and scanned with a fresh snapshot,
 * so a secret committed just before the drop is seen; the scan ignores
 * row-level security, which must not hide rows from this check.  A caller
 * who could not drop the objects anyway is left to PostgreSQL's own
 * permission error, so the guard tells nobody else how many secrets exist.
 *
 * Not covered: DROP DATABASE, and single-user mode (where event triggers
 * do not fire).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "commands/event_trigger.h"
#include "commands/extension.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "pg_compat.h"
#include "se_messages.h"
#include "secrets/drop_guard.h"

static bool allow_drop_with_secrets = false;

/*
 * The setting lets one session drop what the guard protects, so it may be
 * turned on only there: by SET (or SET LOCAL) or the connection's options.
 * From postgresql.conf, ALTER SYSTEM, ALTER DATABASE or ALTER ROLE it would
 * switch the guard off for good, unnoticed, and is refused.
 */
static bool
check_allow_drop(bool *newval, void **extra, GucSource source)
{
	if (*newval && source != PGC_S_SESSION && source != PGC_S_CLIENT)
	{
		GUC_check_errcode(ERRCODE_CANT_CHANGE_RUNTIME_PARAM);
		GUC_check_errdetail("secretenv.allow_drop_with_secrets may only be turned on in the session that drops, with SET.");
		return false;
	}
	return true;
}

void
se_drop_guard_init(void)
{
	DefineCustomBoolVariable("secretenv.allow_drop_with_secrets",
							 "Allows dropping secretenv while secretenv.secrets holds secrets.",
							 "DROP EXTENSION secretenv, DROP SCHEMA secretenv CASCADE and DROP OWNED BY "
							 "the extension's owner delete every stored secret; they are refused unless "
							 "this is on.",
							 &allow_drop_with_secrets,
							 false,
							 PGC_SUSET,
							 GUC_NOT_IN_SAMPLE,
							 check_allow_drop, NULL, NULL);
}

static bool
names_secretenv(List *objects)
{
	ListCell   *lc;

	foreach(lc, objects)
	{
		Node	   *object = (Node *) lfirst(lc);

		if (IsA(object, String) && strcmp(strVal(object), "secretenv") == 0)
			return true;
	}
	return false;
}

/*
 * Whether DROP OWNED BY these roles would drop the extension, its schema or
 * its table, by a caller allowed to do so.
 */
static bool
drops_owned_secretenv(List *roles, Oid extoid, Oid nspoid, Oid relid)
{
	ListCell   *lc;

	foreach(lc, roles)
	{
		Oid			role = get_rolespec_oid((RoleSpec *) lfirst(lc), true);

		if (!OidIsValid(role) || !has_privs_of_role(GetUserId(), role))
			continue;
		if (pg_extension_ownercheck_compat(extoid, role) ||
			pg_namespace_ownercheck_compat(nspoid, role) ||
			(OidIsValid(relid) && pg_class_ownercheck_compat(relid, role)))
			return true;
	}
	return false;
}

/* Number of rows of secretenv.secrets, all of them, as of now. */
static int64
count_secrets(Oid relid)
{
	Relation	rel;
	Snapshot	snapshot;
	TableScanDesc scan;
	TupleTableSlot *slot;
	int64		rows = 0;

	/* The drop takes this lock too; taking it now closes the window. */
	rel = table_open(relid, AccessExclusiveLock);
	snapshot = RegisterSnapshot(GetLatestSnapshot());
	scan = table_beginscan_compat(rel, snapshot, 0, NULL);
	slot = table_slot_create(rel, NULL);
	while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
		rows++;
	ExecDropSingleTupleTableSlot(slot);
	table_endscan(scan);
	UnregisterSnapshot(snapshot);
	table_close(rel, NoLock);
	return rows;
}

/* Event trigger: refuse a DROP that would delete stored secrets. */
PG_FUNCTION_INFO_V1(secret_drop_guard);
Datum
secret_drop_guard(PG_FUNCTION_ARGS)
{
	EventTriggerData *trigdata = (EventTriggerData *) fcinfo->context;
	Node	   *parsetree;
	Oid			extoid;
	Oid			nspoid;
	Oid			relid;
	bool		targeted = false;
	int64		rows;

	if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_EVENT_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("drop_guard() was not called by the event trigger manager")));

	extoid = get_extension_oid("secretenv", true);
	nspoid = get_namespace_oid("secretenv", true);
	if (!OidIsValid(extoid) || !OidIsValid(nspoid))
		PG_RETURN_VOID();
	relid = get_relname_relid("secrets", nspoid);

	parsetree = trigdata->parsetree;
	if (IsA(parsetree, DropStmt))
	{
		DropStmt   *stmt = (DropStmt *) parsetree;

		if (stmt->removeType == OBJECT_EXTENSION)
			targeted = names_secretenv(stmt->objects) &&
				pg_extension_ownercheck_compat(extoid, GetUserId());
		else if (stmt->removeType == OBJECT_SCHEMA)
			targeted = names_secretenv(stmt->objects) &&
				pg_namespace_ownercheck_compat(nspoid, GetUserId());
	}
	else if (IsA(parsetree, DropOwnedStmt))
		targeted = drops_owned_secretenv(((DropOwnedStmt *) parsetree)->roles,
										 extoid, nspoid, relid);

	if (!targeted || !OidIsValid(relid) || allow_drop_with_secrets)
		PG_RETURN_VOID();

	rows = count_secrets(relid);
	if (rows > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 errmsg("cannot drop secretenv while secretenv.secrets holds secrets"),
				 errdetail_plural("%lld stored secret would be deleted.",
								  "%lld stored secrets would be deleted.",
								  (unsigned long) rows, (long long) rows),
				 errhint("Back up or delete the secrets first, or, as a superuser, SET secretenv.allow_drop_with_secrets = on in this session to drop them with the extension.")));
	PG_RETURN_VOID();
}
