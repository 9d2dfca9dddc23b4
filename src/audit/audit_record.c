/*-------------------------------------------------------------------------
 *
 * audit_record.c
 *	  One audit record: what it holds, its canonical encoding (what its MAC
 *	  covers) and its server log line.
 *
 * A record holds identities, never a value nor key material: who (session
 * and current user, application_name, client address, backend pid), what
 * (secret id and name, operation, path, outcome), where and when
 * (database, time), and which version of the secret (when known).  The
 * canonical encoding is a version byte followed by
 * every field in a fixed order, each as a presence byte and, when present,
 * a 4-byte big-endian length and its bytes (integers as 8 big-endian
 * bytes, the uuid as its 16 bytes, text as UTF-8): no two different rows
 * encode alike.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "commands/dbcommands.h"
#include "common/ip.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/backend_status.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "audit/audit.h"
#include "se_messages.h"

static const char *const op_names[] = {
	"read", "create", "update", "delete", "purge",
	"restore", "destroy", "stage", "promote", "rollback"
};
static const char *const via_names[] = {
	"secret_get", "secret_get_cached", "decrypted_secrets", "table", "audit_purge",
	"secret_decrypt"
};
static const char *const outcome_names[] = {"ok", "denied", "not_found", "failed"};

const char *
se_audit_op_name(int op)
{
	return op_names[op];
}

const char *
se_audit_via_name(int via)
{
	return via_names[via];
}

const char *
se_audit_outcome_name(int outcome)
{
	return outcome_names[outcome];
}

static int
index_of(const char *const *names, int n, const char *s)
{
	for (int i = 0; i < n; i++)
		if (strcmp(names[i], s) == 0)
			return i;
	return -1;
}

int
se_audit_op_from_name(const char *s)
{
	return index_of(op_names, lengthof(op_names), s);
}

int
se_audit_via_from_name(const char *s)
{
	return index_of(via_names, lengthof(via_names), s);
}

int
se_audit_outcome_from_name(const char *s)
{
	return index_of(outcome_names, lengthof(outcome_names), s);
}

/*
 * The client's address as pg_stat_activity.client_addr shows it (from
 * this backend's activity entry), once per backend; "" for a Unix socket
 * or a process without a client.
 */
static const char *
client_address(void)
{
	static bool done = false;
	static char addr[64];

	if (done)
		return addr;
	addr[0] = '\0';
	if (MyBEEntry != NULL &&
		(MyBEEntry->st_clientaddr.addr.ss_family == AF_INET ||
		 MyBEEntry->st_clientaddr.addr.ss_family == AF_INET6))
	{
		if (pg_getnameinfo_all(&MyBEEntry->st_clientaddr.addr, MyBEEntry->st_clientaddr.salen,
							   addr, sizeof(addr), NULL, 0,
							   NI_NUMERICHOST | NI_NUMERICSERV) != 0)
			addr[0] = '\0';
		else
			clean_ipv6_addr(MyBEEntry->st_clientaddr.addr.ss_family, addr);
	}
	done = true;
	return addr;
}

static void
copy_name(char *dst, const char *src)
{
	strlcpy(dst, src ? src : "", NAMEDATALEN);
}

/*
 * The session and current user's names, looked up once per role and kept
 * until pg_authid changes (a rename or drop, here or in another backend):
 * a read would otherwise pay two catalog lookups.  Keyed by role, so a
 * SET ROLE or SET SESSION AUTHORIZATION looks the new role up.
 */
typedef struct RoleName
{
	Oid			roleid;			/* InvalidOid: empty */
	char		name[NAMEDATALEN];
} RoleName;

static RoleName role_names[2];
static bool role_callback_set = false;

static void
role_names_changed(Datum arg, int cacheid, uint32 hashvalue)
{
	for (int i = 0; i < lengthof(role_names); i++)
		role_names[i].roleid = InvalidOid;
}

/* Copy the role's name into dst; entry 0 serves session_user, 1 current_user. */
static void
copy_role_name(char *dst, Oid roleid, int entry)
{
	RoleName   *r = &role_names[entry];

	if (!role_callback_set)
	{
		CacheRegisterSyscacheCallback(AUTHOID, role_names_changed, (Datum) 0);
		role_callback_set = true;
	}
	if (r->roleid != roleid || !OidIsValid(roleid))
	{
		char	   *name = GetUserNameFromId(roleid, true);

		copy_name(r->name, name);
		r->roleid = name != NULL ? roleid : InvalidOid;
		if (name != NULL)
			pfree(name);
	}
	strlcpy(dst, r->name, NAMEDATALEN);
}

/* Fill a record from this session's state. */
void
se_audit_fill(SeAuditRecord *rec, SeAuditOp op, SeAuditVia via,
			  SeAuditOutcome outcome, const uint8 *id,
			  const char *name, int namelen)
{
	static char *dbname = NULL;

	if (dbname == NULL)
		dbname = MemoryContextStrdup(TopMemoryContext, get_database_name(MyDatabaseId));
	memset(rec, 0, sizeof(*rec));
	rec->time = GetCurrentTimestamp();
	rec->dboid = MyDatabaseId;
	rec->pid = MyProcPid;
	rec->op = op;
	rec->via = via;
	rec->outcome = outcome;
	rec->has_id = id != NULL;
	if (id != NULL)
		memcpy(rec->id, id, SE_AUDIT_UUID_LEN);
	copy_name(rec->database, dbname);
	copy_role_name(rec->session_user, GetSessionUserId(), 0);
	copy_role_name(rec->current_user, GetUserId(), 1);
	copy_name(rec->application_name, application_name);
	strlcpy(rec->client_addr, client_address(), sizeof(rec->client_addr));
	if (name == NULL)
		rec->namelen = -1;
	else
	{
		/* Longer names cannot be stored; keep whole characters. */
		rec->namelen = namelen <= SE_AUDIT_MAX_NAME ? namelen :
			pg_mbcliplen(name, namelen, SE_AUDIT_MAX_NAME);
		memcpy(rec->name, name, rec->namelen);
	}
}

static void
put_present(StringInfo out, bool present)
{
	appendStringInfoChar(out, present ? 1 : 0);
}

static void
put_bytes(StringInfo out, const void *data, int len)
{
	uint8		be[4] = {(uint8) (len >> 24), (uint8) (len >> 16),
	(uint8) (len >> 8), (uint8) len};

	put_present(out, true);
	appendBinaryStringInfo(out, (const char *) be, 4);
	appendBinaryStringInfo(out, data, len);
}

static void
put_text(StringInfo out, const char *s)
{
	put_bytes(out, s, strlen(s));
}

static void
put_int(StringInfo out, int64 v)
{
	uint8		be[8];

	for (int i = 0; i < 8; i++)
		be[i] = (uint8) ((uint64) v >> (56 - 8 * i));
	put_bytes(out, be, 8);
}

/* The bytes a record's MAC covers; see the header comment. */
void
se_audit_encode(const SeAuditRow *row, StringInfo out)
{
	const SeAuditRecord *rec = &row->rec;

	appendStringInfoChar(out, 1);	/* encoding version */
	put_int(out, row->seq);
	put_int(out, rec->time);
	put_text(out, rec->database);
	put_text(out, rec->session_user);
	put_text(out, rec->current_user);
	put_present(out, rec->has_id);
	if (rec->has_id)
		put_bytes(out, rec->id, SE_AUDIT_UUID_LEN);
	put_present(out, rec->namelen >= 0);
	if (rec->namelen >= 0)
		put_bytes(out, rec->name, rec->namelen);
	put_text(out, se_audit_op_name(rec->op));
	put_text(out, se_audit_via_name(rec->via));
	put_text(out, se_audit_outcome_name(rec->outcome));
	put_text(out, rec->application_name);
	put_present(out, rec->client_addr[0] != '\0');
	if (rec->client_addr[0] != '\0')
		put_text(out, rec->client_addr);
	put_int(out, rec->pid);
	put_present(out, rec->version > 0);
	if (rec->version > 0)
		put_int(out, rec->version);
	put_present(out, row->has_purged_through);
	if (row->has_purged_through)
		put_int(out, row->purged_through);
	put_present(out, row->has_anchor);
	if (row->has_anchor)
		put_bytes(out, row->anchor, SE_AUDIT_MAC_LEN);
	put_int(out, row->mac_kek_version);
}

/* key="value" with \\, \" and control characters (\xNN) escaped. */
static void
put_quoted(StringInfo out, const char *key, const char *s, int len)
{
	appendStringInfo(out, " %s=\"", key);
	for (int i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (c == '"' || c == '\\')
			appendStringInfo(out, "\\%c", c);
		else if (c < 0x20 || c == 0x7f)
			appendStringInfo(out, "\\x%02x", c);
		else
			appendStringInfoChar(out, c);
	}
	appendStringInfoChar(out, '"');
}

/*
 * One LOG_SERVER_ONLY line per record, in the format the README documents:
 *	secretenv audit: seq=N time="..." database="..." ... mac=HEX
 * seq, kek_version and mac are "-" for a record that is not chained (the
 * log destination alone, a standby, a database still on 1.0 or 1.1).
 */
void
se_audit_log_line(const SeAuditRecord *rec, const SeAuditRow *row, const uint8 *mac)
{
	StringInfoData line;
	char		idtext[40] = "-";

	initStringInfo(&line);
	appendStringInfoString(&line, "secretenv audit:");
	if (row != NULL)
		appendStringInfo(&line, " seq=" INT64_FORMAT, row->seq);
	else
		appendStringInfoString(&line, " seq=-");
	put_quoted(&line, "time", timestamptz_to_str(rec->time), strlen(timestamptz_to_str(rec->time)));
	put_quoted(&line, "database", rec->database, strlen(rec->database));
	put_quoted(&line, "session_user", rec->session_user, strlen(rec->session_user));
	put_quoted(&line, "current_user", rec->current_user, strlen(rec->current_user));
	appendStringInfo(&line, " operation=%s via=%s outcome=%s",
					 se_audit_op_name(rec->op), se_audit_via_name(rec->via),
					 se_audit_outcome_name(rec->outcome));
	if (rec->has_id)
	{
		const uint8 *u = rec->id;

		snprintf(idtext, sizeof(idtext),
				 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
				 u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9],
				 u[10], u[11], u[12], u[13], u[14], u[15]);
	}
	appendStringInfo(&line, " secret_id=%s", idtext);
	if (rec->namelen >= 0)
		put_quoted(&line, "secret_name", rec->name, rec->namelen);
	else
		appendStringInfoString(&line, " secret_name=-");
	put_quoted(&line, "application_name", rec->application_name, strlen(rec->application_name));
	put_quoted(&line, "client_addr", rec->client_addr, strlen(rec->client_addr));
	appendStringInfo(&line, " pid=%d", rec->pid);
	if (rec->version > 0)
		appendStringInfo(&line, " version=%d", rec->version);
	else
		appendStringInfoString(&line, " version=-");
	if (row != NULL && mac != NULL)
	{
		appendStringInfo(&line, " kek_version=%d mac=", row->mac_kek_version);
		for (int i = 0; i < SE_AUDIT_MAC_LEN; i++)
			appendStringInfo(&line, "%02x", mac[i]);
	}
	else
		appendStringInfoString(&line, " kek_version=- mac=-");
	ereport(LOG_SERVER_ONLY,
			(errmsg_internal("%s", line.data),
			 errhidestmt(true), errhidecontext(true)));
	pfree(line.data);
}
