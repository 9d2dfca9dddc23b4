/*-------------------------------------------------------------------------
 *
 * pg_compat.h
 *	  Every difference between the PostgreSQL majors secretenv supports
 *	  (15 to 19), in one place.
 *
 * The rest of src/ never tests PG_VERSION_NUM: it calls the *_compat
 * wrappers and uses the parameter-list macros below, which expand to what
 * the major being built against declares (in the manner of timescaledb's
 * src/compat/compat.h).  A new major's difference is added here, with the
 * release that brought it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_COMPAT_H
#define PG_COMPAT_H

#include "postgres.h"

#include "port/atomics.h"		/* before any header that uses barriers */

#include "access/genam.h"
#include "access/tableam.h"
#include "catalog/pg_class.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_namespace.h"
#include "executor/executor.h"
#include "optimizer/planner.h"
#include "parser/analyze.h"
#include "parser/parser.h"
#include "utils/acl.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"

#if PG_VERSION_NUM < 150000
#error "secretenv needs PostgreSQL 15 or later"
#endif

#define PG16_GE (PG_VERSION_NUM >= 160000)
#define PG17_GE (PG_VERSION_NUM >= 170000)
#define PG18_GE (PG_VERSION_NUM >= 180000)
#define PG19_GE (PG_VERSION_NUM >= 190000)

/*
 * 16: the varlena macros (VARDATA_ANY, ...) moved out of postgres.h into
 * varatt.h, and queryjumble.h from utils/ to nodes/.
 */
#if PG16_GE
#include "nodes/queryjumble.h"
#include "varatt.h"
#else
#include "utils/queryjumble.h"
#endif

/*
 * 17: a process's local transaction id moved into PGPROC.vxid.
 */
#if PG17_GE
#define proc_lxid_compat(proc) ((proc)->vxid.lxid)
#else
#define proc_lxid_compat(proc) ((proc)->lxid)
#endif

/*
 * 18: "pg_noreturn" before a declaration replaced pg_attribute_noreturn()
 * after it.
 */
#if !PG18_GE
#define pg_noreturn pg_attribute_noreturn()
#endif

/*
 * 18: the module magic block may carry the library's name and version,
 * shown by pg_get_loaded_modules().
 */
#if PG18_GE
#define PG_MODULE_MAGIC_COMPAT(module_name, module_version) \
	PG_MODULE_MAGIC_EXT(.name = (module_name), .version = (module_version))
#else
#define PG_MODULE_MAGIC_COMPAT(module_name, module_version) PG_MODULE_MAGIC
#endif

/*
 * 16: the per-catalog ownership checks (pg_extension_ownercheck, ...) were
 * replaced by object_ownercheck(classid, objectid, roleid).
 */
static inline bool
pg_extension_ownercheck_compat(Oid extoid, Oid roleid)
{
#if PG16_GE
	return object_ownercheck(ExtensionRelationId, extoid, roleid);
#else
	return pg_extension_ownercheck(extoid, roleid);
#endif
}

static inline bool
pg_namespace_ownercheck_compat(Oid nspoid, Oid roleid)
{
#if PG16_GE
	return object_ownercheck(NamespaceRelationId, nspoid, roleid);
#else
	return pg_namespace_ownercheck(nspoid, roleid);
#endif
}

static inline bool
pg_class_ownercheck_compat(Oid relid, Oid roleid)
{
#if PG16_GE
	return object_ownercheck(RelationRelationId, relid, roleid);
#else
	return pg_class_ownercheck(relid, roleid);
#endif
}

/*
 * 16: guc.c allocates and frees setting strings and check hooks' "extra"
 * with guc_malloc()/guc_free(); before, with malloc()/free().  Either way
 * NULL means out of memory (elevel LOG: a check hook reports, never throws).
 */
static inline void *
guc_malloc_compat(size_t size)
{
#if PG16_GE
	return guc_malloc(LOG, size);
#else
	return malloc(size);
#endif
}

static inline void
guc_free_compat(void *ptr)
{
#if PG16_GE
	guc_free(ptr);
#else
	free(ptr);
#endif
}

/*
 * 18: index_beginscan() takes the scan's instrumentation (NULL: none);
 * 19: and scan option flags, as table_beginscan() does.
 */
static inline IndexScanDesc
index_beginscan_compat(Relation heapRelation, Relation indexRelation,
					   Snapshot snapshot, int nkeys, int norderbys)
{
#if PG19_GE
	return index_beginscan(heapRelation, indexRelation, snapshot, NULL,
						   nkeys, norderbys, SO_NONE);
#elif PG18_GE
	return index_beginscan(heapRelation, indexRelation, snapshot, NULL,
						   nkeys, norderbys);
#else
	return index_beginscan(heapRelation, indexRelation, snapshot, nkeys,
						   norderbys);
#endif
}

static inline TableScanDesc
table_beginscan_compat(Relation rel, Snapshot snapshot, int nkeys,
					   ScanKeyData *key)
{
#if PG19_GE
	return table_beginscan(rel, snapshot, nkeys, key, SO_NONE);
#else
	return table_beginscan(rel, snapshot, nkeys, key);
#endif
}

/*
 * 19: standard_conforming_strings is always on (the variable is gone);
 * before, a session could turn it off.
 */
#if PG19_GE
#define standard_conforming_strings_compat true
#else
#define standard_conforming_strings_compat standard_conforming_strings
#endif

/*
 * 19: building a jsonb value goes through a JsonbInState (zeroed), whose
 * result is the finished value, instead of a JsonbParseState pointer
 * (NULL) and pushJsonbValue's return value.
 */
#if PG19_GE
typedef JsonbInState JsonbPushStateCompat;
#define JSONB_PUSH_STATE_INIT_COMPAT {0}
static inline JsonbValue *
pushJsonbValue_compat(JsonbPushStateCompat *state, JsonbIteratorToken seq,
					  JsonbValue *jbval)
{
	pushJsonbValue(state, seq, jbval);
	return state->result;
}
#else
typedef JsonbParseState *JsonbPushStateCompat;
#define JSONB_PUSH_STATE_INIT_COMPAT NULL
static inline JsonbValue *
pushJsonbValue_compat(JsonbPushStateCompat *state, JsonbIteratorToken seq,
					  JsonbValue *jbval)
{
	return pushJsonbValue(state, seq, jbval);
}
#endif

/*
 * Hook signatures.  A hook is declared with the *_PARAMS list and passes
 * the statement on with the *_ARGS list; the names are fixed by the macros.
 *
 * 18: ExecutorRun lost its execute_once argument.
 */
#if PG18_GE
#define EXECUTOR_RUN_PARAMS_COMPAT \
	QueryDesc *queryDesc, ScanDirection direction, uint64 count
#define EXECUTOR_RUN_ARGS_COMPAT queryDesc, direction, count
#else
#define EXECUTOR_RUN_PARAMS_COMPAT \
	QueryDesc *queryDesc, ScanDirection direction, uint64 count, \
	bool execute_once
#define EXECUTOR_RUN_ARGS_COMPAT queryDesc, direction, count, execute_once
#endif

/*
 * Index entries of a tuple just inserted (not an update, duplicates are
 * errors).  16 added "only summarizing"; 19 turned the flags into a mask.
 */
#if PG19_GE
#define se_insert_index_tuples(rri, slot, estate) \
	ExecInsertIndexTuples((rri), (estate), 0, (slot), NIL, NULL)
#elif PG16_GE
#define se_insert_index_tuples(rri, slot, estate) \
	ExecInsertIndexTuples((rri), (slot), (estate), false, false, NULL, NIL, false)
#else
#define se_insert_index_tuples(rri, slot, estate) \
	ExecInsertIndexTuples((rri), (slot), (estate), false, false, NULL, NIL)
#endif

/* 19: the planner passes on the EXPLAIN state of the statement, if any. */
#if PG19_GE
#define PLANNER_PARAMS_COMPAT \
	Query *parse, const char *query_string, int cursorOptions, \
	ParamListInfo boundParams, ExplainState *es
#define PLANNER_ARGS_COMPAT parse, query_string, cursorOptions, boundParams, es
#else
#define PLANNER_PARAMS_COMPAT \
	Query *parse, const char *query_string, int cursorOptions, \
	ParamListInfo boundParams
#define PLANNER_ARGS_COMPAT parse, query_string, cursorOptions, boundParams
#endif

/* 19: post_parse_analyze_hook receives the JumbleState as const. */
#if PG19_GE
#define POST_PARSE_ANALYZE_PARAMS_COMPAT \
	ParseState *pstate, Query *query, const JumbleState *jstate
#else
#define POST_PARSE_ANALYZE_PARAMS_COMPAT \
	ParseState *pstate, Query *query, JumbleState *jstate
#endif
#define POST_PARSE_ANALYZE_ARGS_COMPAT pstate, query, jstate

/*
 * 16: the postmaster's signal handlers only set a flag and its latch (on
 * Linux a SIGURG read through a signalfd); its server loop reloads the
 * configuration afterwards.  Before, the handler itself did the work, with
 * signals blocked.  key_freshness.c observes the postmaster accordingly.
 */
#define POSTMASTER_DEFERS_SIGNALS_COMPAT PG16_GE

/* 19: a dynahash allocator receives the table's alloc_arg. */
#if PG19_GE
#define HASH_ALLOC_PARAMS_COMPAT Size size, void *alloc_arg
#else
#define HASH_ALLOC_PARAMS_COMPAT Size size
#endif

#endif							/* PG_COMPAT_H */
