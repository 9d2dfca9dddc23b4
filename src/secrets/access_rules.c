/*-------------------------------------------------------------------------
 *
 * access_rules.c
 *	  Per-application access rules: the functions the extension's policies
 *	  call, and the fail-closed check of the read paths (DESIGN §8f).
 *
 * The rules live in secretenv.access_grants (role, LIKE pattern, read or
 * write), an extension configuration table that pg_dump carries; the
 * install script creates the policies that enforce them on
 * secretenv.secrets (secretenv--1.2.sql, "Per-application access rules"):
 * the permissive secretenv_default, true while no hand-written permissive
 * policy exists (access_default_open), and four restrictive
 * secretenv_rules_* policies calling access_rule_allows(secret_name, write).
 *
 * Rules are read with a fresh snapshot, as catalogs are, and kept per
 * backend for the current user until an invalidation: a change of the
 * rules (their statement trigger sends a relcache invalidation of
 * secretenv.secrets, the same one that drops the credential cache), of the
 * table's policies or RLS flag (relcache invalidations of the table), or of
 * roles and memberships (syscache callbacks), since a rule applies to every
 * role that inherits its role's privileges.  The outcome of a rebuild that
 * processed an invalidation itself is used once and not kept.
 *
 * Fail closed.  A restore or a superuser may leave the rules without their
 * enforcement: row-level security disabled on secretenv.secrets, or one of
 * the secretenv_rules_* policies dropped or changed.  Then, while any rule
 * exists, every read path of a role subject to row-level security refuses
 * (55S01): secret_get (hit or miss) and every decryption
 * (se_access_check_enforced, called by secret_get.c and envelope_sql.c),
 * and with the library loaded (shared_preload_libraries) every statement
 * that reads or writes secretenv.secrets, masked_secrets included (an
 * ExecutorStart hook).  The state is computed once per invalidation.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_collation_d.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "nodes/primnodes.h"
#include "rewrite/rowsecurity.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "cache/coherence.h"
#include "cache/writer_counters.h"
#include "pg_compat.h"
#include "se_messages.h"
#include "secrets/access_rules.h"

/* Columns of secretenv.access_grants, pinned by the install script. */
#define GRANTS_ATT_ROLE			1
#define GRANTS_ATT_PATTERN		2
#define GRANTS_ATT_PRIVILEGE	3

#define DEFAULT_POLICY			"secretenv_default"

/* The restrictive policies that enforce the rules. */
typedef struct RulePolicy
{
	const char *name;
	char		cmd;			/* pg_policy.polcmd */
	bool		check_using;	/* its USING calls access_rule_allows */
	bool		check_with_check;	/* its WITH CHECK does */
	bool		write;			/* the write argument of those calls */
} RulePolicy;

static const RulePolicy rule_policies[] = {
	{"secretenv_rules_select", ACL_SELECT_CHR, true, false, false},
	{"secretenv_rules_insert", ACL_INSERT_CHR, false, true, true},
	{"secretenv_rules_update", ACL_UPDATE_CHR, true, true, true},
	{"secretenv_rules_delete", ACL_DELETE_CHR, true, false, true},
};

/* Bumped by every invalidation the state below depends on. */
static uint64 generation = 1;

/* Relations the last computation found; the callback filters on them. */
static Oid	seen_secrets = InvalidOid;
static Oid	seen_grants = InvalidOid;

/* The table's state, for everyone. */
typedef struct TableState
{
	uint64		generation;		/* 0: not computed */
	bool		rules_exist;
	bool		rls_enabled;
	const char *lost_policy;	/* a rule policy missing or changed, or NULL */
	bool		default_intact;
	int			other_policies; /* hand-written policies */
	int			other_permissive;
	Oid			owner;
} TableState;

static TableState table_state = {0};

/* The current user's rules. */
typedef struct UserRules
{
	uint64		generation;		/* 0: not computed */
	Oid			userid;
	bool		bypasses;		/* superuser, BYPASSRLS or owner */
	List	   *rules;			/* of UserRule, in rules_cxt */
} UserRules;

typedef struct UserRule
{
	text	   *pattern;
	bool		write;
} UserRule;

static UserRules user_rules = {0};
static MemoryContext rules_cxt = NULL;

static ExecutorStart_hook_type prev_ExecutorStart = NULL;

static void
bump_generation(void)
{
	generation++;
}

static void
relcache_changed(Datum arg, Oid relid)
{
	if (!OidIsValid(relid) || !OidIsValid(seen_secrets) ||
		relid == seen_secrets || relid == seen_grants)
		bump_generation();
}

static void
roles_changed(Datum arg, int cacheid, uint32 hashvalue)
{
	bump_generation();
}

static Oid
grants_relid(void)
{
	Oid			nsp = get_namespace_oid("secretenv", true);

	return OidIsValid(nsp) ? get_relname_relid("access_grants", nsp) : InvalidOid;
}

/* Is expr a call secretenv.access_rule_allows(<column>, write)? */
static bool
is_allows_call(Node *expr, bool write)
{
	FuncExpr   *f;
	Const	   *c;
	char	   *name;
	bool		ours;

	if (expr == NULL || !IsA(expr, FuncExpr))
		return false;
	f = (FuncExpr *) expr;
	name = get_func_name(f->funcid);
	ours = name != NULL && strcmp(name, "access_rule_allows") == 0 &&
		get_func_namespace(f->funcid) == get_namespace_oid("secretenv", true);
	if (!ours || list_length(f->args) != 2 || !IsA(lsecond(f->args), Const))
		return false;
	c = lsecond_node(Const, f->args);
	return !c->constisnull && DatumGetBool(c->constvalue) == write;
}

static bool
is_public_only(ArrayType *roles)
{
	return ARR_NDIM(roles) == 1 && ARR_DIMS(roles)[0] == 1 &&
		((Oid *) ARR_DATA_PTR(roles))[0] == ACL_ID_PUBLIC;
}

/* Does policy p enforce the rules as rule_policies[i] says? */
static bool
rule_policy_intact(RowSecurityPolicy *p, const RulePolicy *want)
{
	return !p->permissive && p->polcmd == want->cmd && is_public_only(p->roles) &&
		(want->check_using ? is_allows_call((Node *) p->qual, want->write) : p->qual == NULL) &&
		(want->check_with_check ? is_allows_call((Node *) p->with_check_qual, want->write)
		 : p->with_check_qual == NULL);
}

/* Is secretenv_default as the script made it: USING ((SELECT access_default_open())) for all? */
static bool
default_policy_intact(RowSecurityPolicy *p)
{
	SubLink    *sub;
	Query	   *q;
	TargetEntry *te;
	char	   *name;

	if (!p->permissive || p->polcmd != '*' || !is_public_only(p->roles) ||
		p->with_check_qual != NULL || p->qual == NULL || !IsA(p->qual, SubLink))
		return false;
	sub = (SubLink *) p->qual;
	if (sub->subLinkType != EXPR_SUBLINK || !IsA(sub->subselect, Query))
		return false;
	q = (Query *) sub->subselect;
	if (q->rtable != NIL || list_length(q->targetList) != 1)
		return false;
	te = linitial_node(TargetEntry, q->targetList);
	if (!IsA(te->expr, FuncExpr))
		return false;
	name = get_func_name(((FuncExpr *) te->expr)->funcid);
	return name != NULL && strcmp(name, "access_default_open") == 0 &&
		get_func_namespace(((FuncExpr *) te->expr)->funcid) ==
		get_namespace_oid("secretenv", true);
}

/*
 * Scan secretenv.access_grants with a fresh snapshot.  Returns whether it
 * holds any rule; with userid valid, appends the rules that apply to that
 * user (its own and those of roles whose privileges it inherits) to *mine,
 * allocated in rules_cxt.
 */
static bool
scan_rules(Oid relid, Oid userid, List **mine)
{
	Relation	rel = table_open(relid, AccessShareLock);
	Snapshot	snapshot = RegisterSnapshot(GetCatalogSnapshot(relid));
	TableScanDesc scan = table_beginscan_compat(rel, snapshot, 0, NULL);
	TupleTableSlot *slot = table_slot_create(rel, NULL);
	bool		any = false;

	while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		bool		isnull;
		Oid			role;
		MemoryContext old;
		UserRule   *rule;

		any = true;
		if (!OidIsValid(userid))
			break;
		role = DatumGetObjectId(slot_getattr(slot, GRANTS_ATT_ROLE, &isnull));
		if (isnull || !has_privs_of_role(userid, role))
			continue;
		old = MemoryContextSwitchTo(rules_cxt);
		rule = palloc(sizeof(UserRule));
		rule->pattern = DatumGetTextPCopy(slot_getattr(slot, GRANTS_ATT_PATTERN, &isnull));
		rule->write = strcmp(TextDatumGetCString(slot_getattr(slot, GRANTS_ATT_PRIVILEGE, &isnull)),
							 "write") == 0;
		*mine = lappend(*mine, rule);
		MemoryContextSwitchTo(old);
	}
	ExecDropSingleTupleTableSlot(slot);
	table_endscan(scan);
	UnregisterSnapshot(snapshot);
	table_close(rel, NoLock);
	return any;
}

/* The table's state, computed again after an invalidation. */
static const TableState *
get_table_state(void)
{
	uint64		sampled = generation;
	TableState	s = {0};
	Oid			secrets = se_secrets_relid();
	Oid			grants;
	Relation	rel;

	if (table_state.generation == sampled)
		return &table_state;

	grants = grants_relid();
	if (OidIsValid(secrets))
	{
		rel = table_open(secrets, AccessShareLock);
		s.owner = rel->rd_rel->relowner;
		s.rls_enabled = rel->rd_rel->relrowsecurity;
		s.lost_policy = s.rls_enabled ? rule_policies[0].name : NULL;
		if (s.rls_enabled && rel->rd_rsdesc != NULL)
		{
			int			intact = 0;
			ListCell   *lc;

			foreach(lc, rel->rd_rsdesc->policies)
			{
				RowSecurityPolicy *p = lfirst(lc);
				bool		known = false;

				if (strcmp(p->policy_name, DEFAULT_POLICY) == 0)
				{
					known = true;
					s.default_intact = default_policy_intact(p);
				}
				for (int i = 0; i < lengthof(rule_policies); i++)
				{
					if (strcmp(p->policy_name, rule_policies[i].name) != 0)
						continue;
					known = true;
					if (rule_policy_intact(p, &rule_policies[i]))
						intact |= 1 << i;
				}
				if (!known)
				{
					s.other_policies++;
					if (p->permissive)
						s.other_permissive++;
				}
			}
			s.lost_policy = NULL;
			for (int i = 0; i < lengthof(rule_policies); i++)
				if ((intact & (1 << i)) == 0 && s.lost_policy == NULL)
					s.lost_policy = rule_policies[i].name;
		}
		table_close(rel, NoLock);
	}
	if (OidIsValid(grants))
		s.rules_exist = scan_rules(grants, InvalidOid, NULL);

	seen_secrets = secrets;
	seen_grants = grants;
	/* Kept only if no invalidation was processed meanwhile. */
	s.generation = generation == sampled ? sampled : 0;
	table_state = s;
	return &table_state;
}

/* The rules that apply to userid (NIL: none), computed again after an invalidation. */
static const UserRules *
get_user_rules(Oid userid)
{
	uint64		sampled = generation;
	const TableState *ts;
	Oid			grants;

	if (user_rules.generation == sampled && user_rules.userid == userid)
		return &user_rules;

	ts = get_table_state();
	if (rules_cxt == NULL)
		rules_cxt = AllocSetContextCreate(CacheMemoryContext, "secretenv access rules",
										  ALLOCSET_SMALL_SIZES);
	MemoryContextReset(rules_cxt);
	user_rules.rules = NIL;
	user_rules.generation = 0;
	user_rules.userid = userid;
	user_rules.bypasses = superuser_arg(userid) || has_bypassrls_privilege(userid) ||
		userid == ts->owner;
	grants = grants_relid();
	if (ts->rules_exist && OidIsValid(grants))
		(void) scan_rules(grants, userid, &user_rules.rules);
	user_rules.generation = generation == sampled ? sampled : 0;
	return &user_rules;
}

/*
 * Refuse (55S01) when rules exist but are not enforced, for a role that
 * row-level security would bind.  The read paths call this first.
 */
void
se_access_check_enforced(Oid userid)
{
	const TableState *ts = get_table_state();
	const UserRules *ur;

	if (!ts->rules_exist || (ts->rls_enabled && ts->lost_policy == NULL))
		return;
	ur = get_user_rules(userid);
	if (ur->bypasses)
		return;

	/*
	 * Audit hook point (DESIGN §8b): a read refused here is recorded with
	 * outcome "denied" by the audit, where it exists.
	 */
	if (!ts->rls_enabled)
		ereport(ERROR,
				(errcode(ERRCODE_SECRETENV_ACCESS_NOT_ENFORCED),
				 errmsg("access rules of secretenv are not enforced"),
				 errdetail("secretenv.access_grants holds access rules, but row-level security is disabled on secretenv.secrets."),
				 errhint("A superuser restores enforcement with: SELECT secretenv.enforce_access_rules();")));
	ereport(ERROR,
			(errcode(ERRCODE_SECRETENV_ACCESS_NOT_ENFORCED),
			 errmsg("access rules of secretenv are not enforced"),
			 errdetail("secretenv.access_grants holds access rules, but the policy \"%s\" that enforces them on secretenv.secrets is missing or was changed.",
					   ts->lost_policy),
			 errhint("A superuser restores enforcement with: SELECT secretenv.enforce_access_rules();")));
}

/*
 * Whether row-level security could hide a row of secretenv.secrets from
 * userid beyond what its table privileges say: some policy other than the
 * extension's exists, the default policy is not as created, or the user
 * has rules.  When not, secret_get may read through the index directly.
 * Valid only when row-level security is enabled for the user at all.
 */
bool
se_access_policies_bind(Oid userid)
{
	const TableState *ts = get_table_state();

	return ts->other_policies > 0 || !ts->default_intact ||
		get_user_rules(userid)->rules != NIL;
}

/* Whether the current role's rules let it see (or change) a secret of this name. */
PG_FUNCTION_INFO_V1(secret_access_rule_allows);
Datum
secret_access_rule_allows(PG_FUNCTION_ARGS)
{
	text	   *name = PG_GETARG_TEXT_PP(0);
	bool		write = PG_GETARG_BOOL(1);
	const UserRules *ur = get_user_rules(GetUserId());
	ListCell   *lc;

	if (ur->rules == NIL)
		PG_RETURN_BOOL(true);
	foreach(lc, ur->rules)
	{
		UserRule   *rule = lfirst(lc);

		/* Byte-wise LIKE: the C collation, '\' escapes. */
		if ((rule->write || !write) &&
			DatumGetBool(DirectFunctionCall2Coll(textlike, C_COLLATION_OID,
												 PointerGetDatum(name),
												 PointerGetDatum(rule->pattern))))
			PG_RETURN_BOOL(true);
	}
	PG_RETURN_BOOL(false);
}

/* True while secretenv.secrets has no permissive policy but secretenv_default. */
PG_FUNCTION_INFO_V1(secret_access_default_open);
Datum
secret_access_default_open(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(get_table_state()->other_permissive == 0);
}

/* Trigger on secretenv.access_grants: every backend drops its rules and cached secrets. */
PG_FUNCTION_INFO_V1(secret_access_rules_changed);
Datum
secret_access_rules_changed(PG_FUNCTION_ARGS)
{
	Oid			secrets;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("access_rules_changed() was not called by the trigger manager")));
	se_writer_started();
	CacheInvalidateRelcacheByRelid(RelationGetRelid(((TriggerData *) fcinfo->context)->tg_relation));
	secrets = se_secrets_relid();
	if (OidIsValid(secrets))
		CacheInvalidateRelcacheByRelid(secrets);
	return PointerGetDatum(NULL);
}

/*
 * Every statement that reads or writes secretenv.secrets, whatever the path
 * (a view, a function's query), checks that the rules are enforced.
 */
static void
access_ExecutorStart(QueryDesc *queryDesc, int eflags)
{
	ListCell   *lc;

	if (!(eflags & EXEC_FLAG_EXPLAIN_ONLY) && OidIsValid(se_secrets_relid()))
	{
		Oid			secrets = se_secrets_relid();

		foreach(lc, queryDesc->plannedstmt->rtable)
		{
			RangeTblEntry *rte = lfirst(lc);

			if (rte->rtekind == RTE_RELATION && rte->relid == secrets)
			{
				se_access_check_enforced(GetUserId());
				break;
			}
		}
	}
	if (prev_ExecutorStart)
		prev_ExecutorStart(queryDesc, eflags);
	else
		standard_ExecutorStart(queryDesc, eflags);
}

void
se_access_rules_init(void)
{
	CacheRegisterRelcacheCallback(relcache_changed, (Datum) 0);
	CacheRegisterSyscacheCallback(AUTHOID, roles_changed, (Datum) 0);
	CacheRegisterSyscacheCallback(AUTHMEMROLEMEM, roles_changed, (Datum) 0);
	prev_ExecutorStart = ExecutorStart_hook;
	ExecutorStart_hook = access_ExecutorStart;
}
