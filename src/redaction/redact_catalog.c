/*-------------------------------------------------------------------------
 *
 * redact_catalog.c
 *	  Which functions and views carry a plaintext, read from the catalog.
 *
 * Redaction is decided by what a statement calls.  Which of secretenv's
 * functions take or return a plaintext is not a list kept here: it is read
 * from the catalog, from the functions that belong to the extension, by
 * one convention that its SQL scripts follow (and test 067 checks):
 *
 *	  - a function takes a plaintext in each input argument named "value"
 *		or "plaintext" (secret_create, secret_update, secret_encrypt,
 *		secret_mask, insert_secret, replace_secret_value);
 *	  - a function whose result is text or jsonb may return one
 *		(secret_get, secret_decrypt; cache_stats is caught too, harmlessly);
 *	  - a view whose query calls such a function returns one
 *		(decrypted_secrets, and an application's view calling
 *		secret_decrypt), found by the dependency of its rule.
 *
 * The names in secretenv.redact_names (an application's wrappers, tables
 * whose triggers encrypt) are added by name, in any schema.
 *
 * The sets are read once per backend, where catalog access is safe: at the
 * commit of the backend's first transaction (the one that authenticates
 * it, so that its first statement is judged by them too), at parse
 * analysis, executor start and utility statements; and read again after
 * any change to pg_proc or pg_rewrite.  The log hook, which must not touch the catalog, uses
 * the last sets read; before the first read it fails closed (every call
 * counts as one of a plaintext-taking function).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/dependency.h"
#include "catalog/indexing.h"
#include "catalog/pg_depend.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_rewrite.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "commands/proclang.h"
#include "funcapi.h"
#include "nodes/nodeFuncs.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "pg_compat.h"
#include "redaction/redact.h"
#include "se_messages.h"

/* A function of the extension that takes a plaintext. */
typedef struct TakingFunction
{
	char		name[NAMEDATALEN];
	uint32		positions;		/* bit n: its argument n holds a plaintext */
} TakingFunction;

typedef struct CatalogSets
{
	List	   *takes;			/* Oids of functions taking a plaintext */
	List	   *yields;			/* Oids of functions returning one */
	List	   *views;			/* Oids of views returning one */
	List	   *raisers;		/* names of its PL/pgSQL functions */
	TakingFunction *taking;		/* by name, for texts */
	int			ntaking;
} CatalogSets;

static MemoryContext catalog_context = NULL;
static CatalogSets *sets = NULL;	/* NULL until first read */
static bool sets_valid = false;

static char *redact_names_string = NULL;

/* The parsed secretenv.redact_names: NULL-terminated, lower case. */
static char **redact_names = NULL;

/* Whether secretenv.redact_names lists any name. */
static bool
names_listed(void)
{
	return redact_names != NULL && redact_names[0] != NULL;
}

/* Whether name (lower case, no schema) is listed in secretenv.redact_names. */
static bool
listed_name(const char *name)
{
	for (int i = 0; redact_names != NULL && redact_names[i] != NULL; i++)
		if (pg_strcasecmp(name, redact_names[i]) == 0)
			return true;
	return false;
}

/*
 * secretenv.redact_names: a comma-separated list of names (of functions,
 * tables, views), each made of identifier characters.  Parsed here,
 * installed by the assign hook, as GUC check hooks must not throw.
 */
static bool
check_redact_names(char **newval, void **extra, GucSource source)
{
	const char *raw = *newval;
	int			count = 1;
	char	  **names;
	char	   *strings;
	int			n = 0;

	for (const char *p = raw; *p; p++)
		if (*p == ',')
			count++;
	/* One block: the pointer array, then the strings; freed by guc.c. */
	names = guc_malloc_compat(sizeof(char *) * (count + 1) + strlen(raw) + 1);
	if (names == NULL)
	{
		GUC_check_errcode(ERRCODE_OUT_OF_MEMORY);
		GUC_check_errmsg("out of memory");
		return false;
	}
	strings = (char *) (names + count + 1);
	strcpy(strings, raw);

	for (char *item = strings; item != NULL;)
	{
		char	   *comma = strchr(item, ',');
		char	   *end;

		if (comma)
			*comma = '\0';
		while (isspace((unsigned char) *item))
			item++;
		end = item + strlen(item);
		while (end > item && isspace((unsigned char) end[-1]))
			*--end = '\0';
		if (*item == '\0')
		{
			if (comma != NULL || n > 0)
			{
				GUC_check_errdetail("The list contains an empty name.");
				guc_free_compat(names);
				return false;
			}
		}
		else
		{
			for (char *c = item; *c; c++)
			{
				if (!(isalnum((unsigned char) *c) || *c == '_' || *c == '$'))
				{
					GUC_check_errdetail("Names may contain only letters, digits, \"_\" and \"$\"; give them without schema or quotes.");
					guc_free_compat(names);
					return false;
				}
				*c = pg_tolower((unsigned char) *c);
			}
			if (end - item >= NAMEDATALEN)
			{
				GUC_check_errdetail("A name is longer than %d bytes.", NAMEDATALEN - 1);
				guc_free_compat(names);
				return false;
			}
			names[n++] = item;
		}
		item = comma ? comma + 1 : NULL;
	}
	names[n] = NULL;
	*extra = names;
	return true;
}

static void
assign_redact_names(const char *newval, void *extra)
{
	redact_names = (char **) extra;
}

static void
invalidate_sets(Datum arg, int cacheid, uint32 hashvalue)
{
	sets_valid = false;
}

/* Record function funcid of the extension in the sets being built. */
static void
examine_function(CatalogSets *build, Oid funcid, Oid plpgsql)
{
	HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(funcid));
	Form_pg_proc proc;
	Oid		   *argtypes;
	char	  **argnames;
	char	   *argmodes;
	int			nargs;
	int			input = 0;
	uint32		positions = 0;

	if (!HeapTupleIsValid(tup))
		return;
	proc = (Form_pg_proc) GETSTRUCT(tup);
	nargs = get_func_arg_info(tup, &argtypes, &argnames, &argmodes);
	for (int i = 0; i < nargs; i++)
	{
		char		mode = argmodes ? argmodes[i] : PROARGMODE_IN;

		if (mode == PROARGMODE_OUT || mode == PROARGMODE_TABLE)
			continue;
		if (argnames != NULL && argnames[i] != NULL && input < 32 &&
			se_redact_plaintext_parameter(argnames[i]))
			positions |= (uint32) 1 << input;
		input++;
	}
	if (positions != 0)
	{
		build->takes = lappend_oid(build->takes, funcid);
		build->taking = repalloc(build->taking, sizeof(TakingFunction) * (build->ntaking + 1));
		strlcpy(build->taking[build->ntaking].name, NameStr(proc->proname), NAMEDATALEN);
		build->taking[build->ntaking].positions = positions;
		build->ntaking++;
	}
	if (proc->prorettype == TEXTOID || proc->prorettype == JSONBOID)
		build->yields = lappend_oid(build->yields, funcid);
	if (proc->prolang == plpgsql)
		build->raisers = lappend(build->raisers, pstrdup(NameStr(proc->proname)));
	ReleaseSysCache(tup);
}

typedef struct CallsContext
{
	const CatalogSets *sets;
	bool		takes;
	bool		yields;
} CallsContext;

static bool calls_walker(Node *node, CallsContext *ctx);

static void
check_function(Oid funcid, CallsContext *ctx)
{
	if (list_member_oid(ctx->sets->takes, funcid))
		ctx->takes = true;
	if (list_member_oid(ctx->sets->yields, funcid))
		ctx->yields = true;
	if (!ctx->takes && names_listed())
	{
		char	   *name = get_func_name(funcid);

		if (name != NULL && listed_name(name))
			ctx->takes = true;
	}
}

static bool
calls_walker(Node *node, CallsContext *ctx)
{
	if (node == NULL)
		return false;
	if (IsA(node, FuncExpr))
		check_function(((FuncExpr *) node)->funcid, ctx);
	else if (IsA(node, RangeTblEntry))
	{
		RangeTblEntry *rte = (RangeTblEntry *) node;

		if (rte->rtekind == RTE_RELATION)
		{
			char	   *name;

			if (list_member_oid(ctx->sets->views, rte->relid))
				ctx->yields = true;
			if (names_listed() &&
				(name = get_rel_name(rte->relid)) != NULL &&
				listed_name(name))
				ctx->takes = true;
		}
		return false;
	}
	else if (IsA(node, Query))
	{
		Query	   *query = (Query *) node;
		Node	   *inner = NULL;

		/* Utility statements analysed with their query. */
		if (query->utilityStmt != NULL)
		{
			Node	   *stmt = query->utilityStmt;

			if (IsA(stmt, ExplainStmt))
				inner = ((ExplainStmt *) stmt)->query;
			else if (IsA(stmt, CreateTableAsStmt))
				inner = ((CreateTableAsStmt *) stmt)->query;
			else if (IsA(stmt, DeclareCursorStmt))
				inner = ((DeclareCursorStmt *) stmt)->query;
			else if (IsA(stmt, CallStmt))
				inner = (Node *) ((CallStmt *) stmt)->funcexpr;
			if (inner != NULL && (IsA(inner, Query) || IsA(inner, FuncExpr)))
				calls_walker(inner, ctx);
		}
		return query_tree_walker(query, calls_walker, ctx, QTW_EXAMINE_RTES_BEFORE);
	}
	return expression_tree_walker(node, calls_walker, ctx);
}

/*
 * Record every view whose query calls function funcid: its rewrite rule
 * depends on the function.  Read from pg_depend and pg_rewrite, without
 * opening the view (no lock to wait for).
 */
static void
add_views_calling(CatalogSets *build, Relation depend, Relation rewrite, Oid funcid)
{
	ScanKeyData key[2];
	SysScanDesc scan;
	HeapTuple	tup;

	ScanKeyInit(&key[0], Anum_pg_depend_refclassid, BTEqualStrategyNumber,
				F_OIDEQ, ObjectIdGetDatum(ProcedureRelationId));
	ScanKeyInit(&key[1], Anum_pg_depend_refobjid, BTEqualStrategyNumber,
				F_OIDEQ, ObjectIdGetDatum(funcid));
	scan = systable_beginscan(depend, DependReferenceIndexId, true, NULL, 2, key);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		Form_pg_depend dep = (Form_pg_depend) GETSTRUCT(tup);
		ScanKeyData rkey;
		SysScanDesc rscan;
		HeapTuple	rtup;

		if (dep->classid != RewriteRelationId)
			continue;
		ScanKeyInit(&rkey, Anum_pg_rewrite_oid, BTEqualStrategyNumber,
					F_OIDEQ, ObjectIdGetDatum(dep->objid));
		rscan = systable_beginscan(rewrite, RewriteOidIndexId, true, NULL, 1, &rkey);
		if (HeapTupleIsValid(rtup = systable_getnext(rscan)))
		{
			Oid			view = ((Form_pg_rewrite) GETSTRUCT(rtup))->ev_class;

			if (get_rel_relkind(view) == RELKIND_VIEW &&
				!list_member_oid(build->views, view))
				build->views = lappend_oid(build->views, view);
		}
		systable_endscan(rscan);
	}
	systable_endscan(scan);
}

static void read_extension(CatalogSets *build, Oid extoid);

/*
 * Read the sets from the catalog if they are not read or out of date, and
 * the catalog can be read now.
 */
void
se_redact_catalog_load(void)
{
	Oid			extoid;
	CatalogSets *build;
	MemoryContext old;

	if (sets_valid || !IsTransactionState() || IsAbortedTransactionBlockState())
		return;

	if (catalog_context == NULL)
		catalog_context = AllocSetContextCreate(CacheMemoryContext,
												"secretenv redaction catalog",
												ALLOCSET_SMALL_SIZES);
	/* Valid from here: a change while reading invalidates it again. */
	sets_valid = true;
	MemoryContextReset(catalog_context);
	sets = NULL;
	old = MemoryContextSwitchTo(catalog_context);
	build = palloc0(sizeof(CatalogSets));
	build->taking = palloc(sizeof(TakingFunction));

	PG_TRY();
	{
		extoid = get_extension_oid("secretenv", true);
		if (OidIsValid(extoid))
			read_extension(build, extoid);
	}
	PG_CATCH();
	{
		/* Unread: the texts fail closed until the next statement reads it. */
		sets_valid = false;
		MemoryContextSwitchTo(old);
		PG_RE_THROW();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	sets = build;
}

/* Read the functions and views of extension extoid into build. */
static void
read_extension(CatalogSets *build, Oid extoid)
{
	ListCell   *lc;

	{
		Oid			plpgsql = get_language_oid("plpgsql", true);
		Relation	depend = table_open(DependRelationId, AccessShareLock);
		Relation	rewrite;
		ScanKeyData key[2];
		SysScanDesc scan;
		HeapTuple	tup;

		ScanKeyInit(&key[0], Anum_pg_depend_refclassid, BTEqualStrategyNumber,
					F_OIDEQ, ObjectIdGetDatum(ExtensionRelationId));
		ScanKeyInit(&key[1], Anum_pg_depend_refobjid, BTEqualStrategyNumber,
					F_OIDEQ, ObjectIdGetDatum(extoid));
		scan = systable_beginscan(depend, DependReferenceIndexId, true, NULL, 2, key);
		while (HeapTupleIsValid(tup = systable_getnext(scan)))
		{
			Form_pg_depend dep = (Form_pg_depend) GETSTRUCT(tup);

			if (dep->deptype != DEPENDENCY_EXTENSION)
				continue;
			if (dep->classid == ProcedureRelationId)
				examine_function(build, dep->objid, plpgsql);
		}
		systable_endscan(scan);

		rewrite = table_open(RewriteRelationId, AccessShareLock);
		foreach(lc, build->yields)
			add_views_calling(build, depend, rewrite, lfirst_oid(lc));
		foreach(lc, build->takes)
			add_views_calling(build, depend, rewrite, lfirst_oid(lc));
		table_close(rewrite, AccessShareLock);
		table_close(depend, AccessShareLock);
	}
}

/*
 * Read the sets at a transaction's commit (XACT_EVENT_PRE_COMMIT), in a
 * subtransaction: a failure to read them must not fail the commit (nor
 * the connection, whose first transaction commits here); the texts then
 * fail closed until a later statement reads them.
 */
void
se_redact_catalog_load_at_commit(void)
{
	MemoryContext oldcontext = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;

	if (sets_valid || !IsTransactionState())
		return;
	BeginInternalSubTransaction(NULL);
	PG_TRY();
	{
		se_redact_catalog_load();
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcontext);
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcontext);
	CurrentResourceOwner = oldowner;
}

/* Whether the sets have been read once (the texts fail closed before). */
bool
se_redact_catalog_read(void)
{
	return sets != NULL;
}

/*
 * What the name of a call in a statement text is: a plaintext-taking
 * function of the extension (*positions: its plaintext arguments, over all
 * its overloads), a listed wrapper or anything while the catalog is
 * unread (SE_FUNCTION_UNKNOWN), or something else.
 */
int
se_redact_catalog_call(const char *name, uint32 *positions)
{
	*positions = 0;
	if (listed_name(name))
		return SE_FUNCTION_UNKNOWN;
	if (sets == NULL)
		return SE_FUNCTION_UNKNOWN;
	for (int i = 0; i < sets->ntaking; i++)
		if (strcmp(sets->taking[i].name, name) == 0)
			*positions |= sets->taking[i].positions;
	return *positions != 0 ? SE_FUNCTION_TAKES : SE_FUNCTION_OTHER;
}

/*
 * Whether s[0..len), code quoted as a string, mentions a plaintext-taking
 * function; always true while the catalog is unread.
 */
bool
se_redact_catalog_mentions(const char *s, size_t len)
{
	char	   *text;
	bool		found = false;

	if (sets == NULL)
		return true;
	text = pnstrdup(s, len);
	for (char *p = text; *p; p++)
		*p = pg_tolower((unsigned char) *p);
	for (int i = 0; i < sets->ntaking && !found; i++)
		found = strstr(text, sets->taking[i].name) != NULL;
	pfree(text);
	return found;
}

/* Whether name[0..len) is one of the extension's PL/pgSQL functions. */
bool
se_redact_catalog_raiser(const char *name, size_t len)
{
	ListCell   *lc;

	if (sets == NULL)
		return false;
	foreach(lc, sets->raisers)
	{
		const char *raiser = lfirst(lc);

		if (strlen(raiser) == len && strncmp(raiser, name, len) == 0)
			return true;
	}
	return false;
}

/* The convention: an argument of these names holds a plaintext. */
bool
se_redact_plaintext_parameter(const char *name)
{
	return strcmp(name, "value") == 0 || strcmp(name, "plaintext") == 0;
}

/*
 * Whether the analysed query calls a function, or reads a view, that takes
 * (*takes) or returns (*yields) a plaintext.
 */
void
se_redact_query_calls(Query *query, bool *takes, bool *yields)
{
	CallsContext ctx = {sets, false, false};

	*takes = *yields = false;
	if (sets == NULL)
		return;
	calls_walker((Node *) query, &ctx);
	*takes = ctx.takes;
	*yields = ctx.yields;
}

void
se_redact_catalog_init(void)
{
	DefineCustomStringVariable("secretenv.redact_names",
							   "Further functions (wrappers) and tables whose calls or use mark a statement as carrying a plaintext.",
							   "Comma-separated names without schema: application functions that wrap secret_create and the like, tables whose triggers call them.",
							   &redact_names_string,
							   "",
							   PGC_SUSET,
							   GUC_LIST_INPUT,
							   check_redact_names, assign_redact_names, NULL);

	CacheRegisterSyscacheCallback(PROCOID, invalidate_sets, (Datum) 0);
	CacheRegisterSyscacheCallback(RULERELNAME, invalidate_sets, (Datum) 0);
}
