/*-------------------------------------------------------------------------
 *
 * keyring.c
 *	  KEK configuration, derivation and lookup.
 *
 * Two KEKs may be configured: the current one (secretenv.kek_passphrase,
 * secretenv.kek_version), used for every new wrap, and the previous one
 * (secretenv.kek_previous_passphrase, secretenv.kek_previous_version), kept
 * so that old rows stay readable and can be rotated while the server is up.
 *
 * Derivation protocol.  A KEK costs 600 000 PBKDF2 iterations, so it is
 * derived once per process per (salt, passphrase, version) and kept in a
 * page of secure memory (locked, excluded from core dumps, wiped on reuse).
 * The assign hooks of the key GUCs only record the new configuration and
 * bump a generation counter; a slot whose generation is stale is re-derived
 * on its next use, unless the configuration it was derived from is in fact
 * unchanged (a reload that rewrote the same values) or the other slot holds
 * the same KEK (the previous KEK becoming current).
 *
 * With shared_preload_libraries the postmaster derives both slots at start
 * and again whenever a reload changes them, so every backend forked later
 * inherits ready KEKs and no connection pays for PBKDF2.  Without preload
 * each backend derives on first use.
 *
 * Passphrases come from the GUCs or, better for production, from
 * secretenv.kek_passphrase_command: a command run by the server (like
 * ssl_passphrase_command) whose first output line is the passphrase of the
 * version substituted for %v.  Its output is never logged or quoted.
 *
 * The passphrase GUCs are superuser-only, hidden from SHOW ALL and
 * pg_settings, refused by ALTER SYSTEM, and their show hook prints a mask
 * even to superusers: no SQL route reads a passphrase back.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "port.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"

#include "passphrase_command.h"
#include "secretenv.h"

/*
 * Used when no passphrase is configured.  It is MLflow's development
 * passphrase, so that unconfigured secretenv and unconfigured MLflow with
 * the same salt read each other's rows; it protects nothing.
 */
#define SE_DEVELOPMENT_PASSPHRASE "mlflow-default-kek-passphrase-for-development-only"
#define SE_DEFAULT_SALT "secretenv-kek-v1"
#define SE_MAX_PASSPHRASE_LEN 4096
#define SE_MIN_RECOMMENDED_PASSPHRASE_LEN 32

#define SLOT_CURRENT 0
#define SLOT_PREVIOUS 1
#define NUM_SLOTS 2

/* GUC variables */
static char *kek_passphrase_guc = NULL;
static int	kek_version_guc = 1;
static char *kek_previous_passphrase_guc = NULL;
static int	kek_previous_version_guc = 0;
static char *kek_salt_guc = NULL;
static char *kek_passphrase_command_guc = NULL;

/*
 * The configuration as the assign hooks last saw it.  guc.c stores the new
 * value into the variable only after the assign hook returns, so the hooks
 * keep their own copy; derivation reads this, never the variables.  The
 * string pointers are guc.c's, valid until the next assignment.
 */
typedef struct KeyConfig
{
	const char *passphrase[NUM_SLOTS];
	int32		version[NUM_SLOTS];
	const char *salt;
	const char *command;
} KeyConfig;

static KeyConfig config;

/* Bumped whenever a key GUC takes a different value. */
static uint64 config_generation = 1;

/*
 * Long-lived secrets: the derived KEKs and the passphrase each was derived
 * from (kept to recognise an unchanged configuration after a reload).  One
 * secure page, allocated once per postmaster or backend.
 */
typedef struct SecureKeys
{
	uint8_t		kek[NUM_SLOTS][SE_KEY_LEN];
	char		passphrase[NUM_SLOTS][SE_MAX_PASSPHRASE_LEN + 1];
} SecureKeys;

typedef struct SlotState
{
	bool		derived;		/* kek[] holds a KEK for the fields below */
	int32		version;
	char		salt[NAMEDATALEN * 4];
	uint64		generation;		/* config_generation when last validated */
} SlotState;

static SecureKeys *secure_keys = NULL;
static int	secure_keys_locked = 0;
static SlotState slots[NUM_SLOTS];

/* Set once _PG_init has defined every GUC. */
static bool keyring_ready = false;

/* Loaded through shared_preload_libraries (KEKs inherited from postmaster). */
static bool preloaded = false;

/* Per-backend warnings already given for this configuration generation. */
static uint64 warned_generation = 0;

/* Why a slot could not be brought up to date. */
typedef enum KekFailure
{
	KEK_OK,
	KEK_COMMAND_FAILED,
	KEK_DERIVATION_FAILED
} KekFailure;

/*
 * PBKDF2 runs in this process (a forked backend inherits the postmaster's
 * count, hence the pid), reported by key_config() so tests can prove that
 * no call derives a KEK.
 */
static uint64 derivations = 0;
static int	derivations_pid = 0;

/* How and why the last passphrase command failed (never its output). */
static se_passphrase_result last_command_result = SE_PASSPHRASE_OK;
static char last_command_failure[SE_PASSPHRASE_REASON_LEN];

static bool
command_configured(void)
{
	return config.command != NULL && config.command[0] != '\0';
}

static const char *
effective_passphrase(int slot)
{
	const char *p = config.passphrase[slot];

	return (p == NULL || p[0] == '\0') ? SE_DEVELOPMENT_PASSPHRASE : p;
}

static bool
slot_uses_default(int slot)
{
	const char *p = config.passphrase[slot];

	return !command_configured() && (p == NULL || p[0] == '\0');
}

/* The passphrase of a slot, from the command or the GUCs, into buf. */
static bool
obtain_passphrase(int slot, char *buf, size_t bufsize)
{
	if (command_configured())
	{
		char		reason[SE_PASSPHRASE_REASON_LEN];
		se_passphrase_result result;

		/* At most SE_MAX_PASSPHRASE_LEN bytes, as from the GUCs. */
		result = se_passphrase_command_run(config.command, config.version[slot],
										   buf, Min(bufsize, SE_MAX_PASSPHRASE_LEN + 1),
										   reason, sizeof(reason));
		if (result == SE_PASSPHRASE_OK)
			return true;
		last_command_result = result;
		strlcpy(last_command_failure, reason, sizeof(last_command_failure));
		return false;
	}
	strlcpy(buf, effective_passphrase(slot), bufsize);
	return true;
}

static void
report_kek_failure(int elevel, int32 version, KekFailure failure)
{
	if (failure == KEK_COMMAND_FAILED)
		ereport(elevel,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION),
				 errmsg("could not obtain the KEK passphrase of version %d", version),
				 errdetail("The passphrase command failed: %s.", last_command_failure),
				 last_command_result == SE_PASSPHRASE_TIMED_OUT ?
				 errhint("Make the command finish within secretenv.kek_passphrase_command_timeout, or raise that setting.") :
				 last_command_result == SE_PASSPHRASE_INTERRUPTED ? 0 :
				 errhint("The command must print the passphrase on its first line and exit with status 0.")));
	else
		ereport(elevel,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION),
				 errmsg("could not derive the KEK of version %d", version)));
}

static void
ensure_secure_keys(void)
{
	if (secure_keys != NULL)
		return;
	secure_keys = se_secure_alloc(sizeof(SecureKeys), &secure_keys_locked);
	if (secure_keys == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not allocate secure memory for key material")));
}

/*
 * Bring a slot up to date with the configuration.  Never throws (except
 * out-of-memory in ensure_secure_keys); the caller decides whether a
 * failure is an ERROR.
 */
static KekFailure
refresh_slot(int slot)
{
	SlotState  *s = &slots[slot];
	const char *salt = config.salt ? config.salt : SE_DEFAULT_SALT;
	int32		version = config.version[slot];
	int			other = 1 - slot;
	char		pass[SE_MAX_PASSPHRASE_LEN + 2];
	KekFailure	result = KEK_OK;

	if (s->generation == config_generation && s->derived)
		return KEK_OK;

	ensure_secure_keys();
	if (!obtain_passphrase(slot, pass, sizeof(pass)))
		return KEK_COMMAND_FAILED;

	if (s->derived && s->version == version && strcmp(s->salt, salt) == 0 &&
		strcmp(secure_keys->passphrase[slot], pass) == 0)
	{
		/* A reload that left this KEK's inputs alone costs nothing. */
	}
	else if (slots[other].derived && slots[other].version == version &&
			 strcmp(slots[other].salt, salt) == 0 &&
			 strcmp(secure_keys->passphrase[other], pass) == 0)
	{
		/* The previous KEK became current, or vice versa: no PBKDF2. */
		memcpy(secure_keys->kek[slot], secure_keys->kek[other], SE_KEY_LEN);
	}
	else
	{
		s->derived = false;
		if (derivations_pid != MyProcPid)
		{
			derivations_pid = MyProcPid;
			derivations = 0;
		}
		derivations++;
		if (se_derive_kek((const uint8_t *) pass, strlen(pass),
						  (const uint8_t *) salt, strlen(salt),
						  (uint32_t) version, secure_keys->kek[slot]) != SE_OK)
		{
			se_wipe(secure_keys->kek[slot], SE_KEY_LEN);
			result = KEK_DERIVATION_FAILED;
		}
	}

	if (result == KEK_OK)
	{
		strlcpy(secure_keys->passphrase[slot], pass, SE_MAX_PASSPHRASE_LEN + 1);
		strlcpy(s->salt, salt, sizeof(s->salt));
		s->version = version;
		s->derived = true;
		s->generation = config_generation;
	}
	se_wipe(pass, sizeof(pass));
	return result;
}

/*
 * Bring every configured slot up to date.  In a rotation the new previous
 * KEK is the old current one: refreshing the previous slot first lets it
 * copy that KEK before the current slot is overwritten, so a rotation costs
 * one derivation, for the new KEK only.
 */
static void
refresh_all_slots(KekFailure failures[NUM_SLOTS])
{
	int			first = SLOT_CURRENT;

	if (slots[SLOT_CURRENT].derived &&
		slots[SLOT_CURRENT].version == config.version[SLOT_PREVIOUS])
		first = SLOT_PREVIOUS;

	for (int i = 0; i < NUM_SLOTS; i++)
	{
		int			slot = i == 0 ? first : 1 - first;

		failures[slot] = config.version[slot] > 0 ? refresh_slot(slot) : KEK_OK;
	}
}

/*
 * In the postmaster (preloaded), derive as soon as the configuration
 * changes, so that backends forked afterwards inherit the KEKs.  A failure
 * is logged; backends retry, and report it as an ERROR, on first use.
 */
static void
refresh_in_postmaster(void)
{
	KekFailure	failures[NUM_SLOTS];

	if (!keyring_ready || IsUnderPostmaster || !process_shared_preload_libraries_done)
		return;
	refresh_all_slots(failures);
	for (int slot = 0; slot < NUM_SLOTS; slot++)
		if (failures[slot] != KEK_OK)
			report_kek_failure(LOG, config.version[slot], failures[slot]);
}

static void
config_changed(void)
{
	config_generation++;
	refresh_in_postmaster();
}

static bool
strings_differ(const char *a, const char *b)
{
	return strcmp(a ? a : "", b ? b : "") != 0;
}

static bool
check_passphrase(char **newval, void **extra, GucSource source)
{
	if (*newval && strlen(*newval) > SE_MAX_PASSPHRASE_LEN)
	{
		GUC_check_errdetail("A KEK passphrase may be at most %d bytes long.",
							SE_MAX_PASSPHRASE_LEN);
		return false;
	}
	return true;
}

static void
assign_passphrase(const char *newval, void *extra)
{
	bool		changed = strings_differ(config.passphrase[SLOT_CURRENT], newval);

	/* Always take the new pointer: guc.c frees the old string, equal or not. */
	config.passphrase[SLOT_CURRENT] = newval;
	if (changed)
		config_changed();
}

static void
assign_previous_passphrase(const char *newval, void *extra)
{
	bool		changed = strings_differ(config.passphrase[SLOT_PREVIOUS], newval);

	/* Always take the new pointer: guc.c frees the old string, equal or not. */
	config.passphrase[SLOT_PREVIOUS] = newval;
	if (changed)
		config_changed();
}

static void
assign_version(int newval, void *extra)
{
	if (config.version[SLOT_CURRENT] != newval)
	{
		config.version[SLOT_CURRENT] = newval;
		config_changed();
	}
}

static void
assign_previous_version(int newval, void *extra)
{
	if (config.version[SLOT_PREVIOUS] != newval)
	{
		config.version[SLOT_PREVIOUS] = newval;
		config_changed();
	}
}

static bool
check_salt(char **newval, void **extra, GucSource source)
{
	if (*newval == NULL || (*newval)[0] == '\0')
	{
		GUC_check_errdetail("The KEK salt must not be empty.");
		return false;
	}
	if (strlen(*newval) >= sizeof(slots[0].salt))
	{
		GUC_check_errdetail("The KEK salt may be at most %d bytes long.",
							(int) sizeof(slots[0].salt) - 1);
		return false;
	}
	return true;
}

static void
assign_salt(const char *newval, void *extra)
{
	bool		changed = strings_differ(config.salt, newval);

	/* Always take the new pointer: guc.c frees the old string, equal or not. */
	config.salt = newval;
	if (changed)
		config_changed();
}

static void
assign_passphrase_command(const char *newval, void *extra)
{
	bool		changed = strings_differ(config.command, newval);

	/* Always take the new pointer: guc.c frees the old string, equal or not. */
	config.command = newval;
	if (changed)
		config_changed();
}

/* Whatever the value, SHOW prints a mask: a passphrase is never read back. */
static const char *
show_passphrase(void)
{
	return "********";
}

static const char *
show_previous_passphrase(void)
{
	return "********";
}

void
se_keyring_init(void)
{
	const char *visible;

	/*
	 * Without preload, postgresql.conf's value sat in a placeholder GUC that
	 * any role could read until this moment.
	 */
	visible = GetConfigOption("secretenv.kek_passphrase", true, false);
	if (!process_shared_preload_libraries_in_progress && visible && visible[0] != '\0')
		ereport(WARNING,
				(errmsg("secretenv.kek_passphrase was readable by every role until secretenv was loaded"),
				 errdetail("The library was loaded on demand rather than through shared_preload_libraries."),
				 errhint("Add secretenv to shared_preload_libraries and restart the server.")));

	DefineCustomStringVariable("secretenv.kek_passphrase",
							   "Passphrase from which the current KEK is derived.",
							   "Empty means the built-in development passphrase, which protects nothing.",
							   &kek_passphrase_guc,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL |
							   GUC_NOT_IN_SAMPLE | GUC_DISALLOW_IN_AUTO_FILE,
							   check_passphrase, assign_passphrase, show_passphrase);

	DefineCustomIntVariable("secretenv.kek_version",
							"Version of the current KEK; new wraps use it.",
							NULL,
							&kek_version_guc,
							1, 1, INT_MAX,
							PGC_SIGHUP,
							0,
							NULL, assign_version, NULL);

	DefineCustomStringVariable("secretenv.kek_previous_passphrase",
							   "Passphrase of the KEK being retired.",
							   "Used only when secretenv.kek_previous_version is set; empty means the development passphrase.",
							   &kek_previous_passphrase_guc,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL |
							   GUC_NOT_IN_SAMPLE | GUC_DISALLOW_IN_AUTO_FILE,
							   check_passphrase, assign_previous_passphrase,
							   show_previous_passphrase);

	DefineCustomIntVariable("secretenv.kek_previous_version",
							"Version of the KEK being retired; 0 means none.",
							NULL,
							&kek_previous_version_guc,
							0, 0, INT_MAX,
							PGC_SIGHUP,
							0,
							NULL, assign_previous_version, NULL);

	DefineCustomStringVariable("secretenv.kek_salt",
							   "Application salt of the KEK derivation.",
							   "The KEK version is appended to it as 4 big-endian bytes.",
							   &kek_salt_guc,
							   SE_DEFAULT_SALT,
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY | GUC_NOT_IN_SAMPLE,
							   check_salt, assign_salt, NULL);

	DefineCustomStringVariable("secretenv.kek_passphrase_command",
							   "Command that prints the KEK passphrase of a version.",
							   "%v is replaced by the version and %% by a percent sign; the first output line is the passphrase. "
							   "When set, it takes precedence over the passphrase settings.",
							   &kek_passphrase_command_guc,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL |
							   GUC_NOT_IN_SAMPLE | GUC_DISALLOW_IN_AUTO_FILE,
							   NULL, assign_passphrase_command, NULL);

	keyring_ready = true;
	preloaded = process_shared_preload_libraries_in_progress;

	/* Preloaded: derive now, in the postmaster, for every future backend. */
	if (process_shared_preload_libraries_in_progress)
	{
		KekFailure	failures[NUM_SLOTS];

		refresh_all_slots(failures);
		for (int slot = 0; slot < NUM_SLOTS; slot++)
			if (failures[slot] != KEK_OK)
				report_kek_failure(ERROR, config.version[slot], failures[slot]);
	}
}

/* Which slot serves a version, or -1 if none is configured for it. */
static int
slot_for_version(int32 version)
{
	if (version == config.version[SLOT_CURRENT])
		return SLOT_CURRENT;
	if (config.version[SLOT_PREVIOUS] > 0 && version == config.version[SLOT_PREVIOUS])
		return SLOT_PREVIOUS;
	return -1;
}

/*
 * Warn, once per backend and configuration, about configurations that work
 * but protect little.
 */
static void
warn_about_configuration(void)
{
	if (warned_generation == config_generation)
		return;
	warned_generation = config_generation;

	if (command_configured())
	{
		if ((config.passphrase[SLOT_CURRENT] && config.passphrase[SLOT_CURRENT][0]) ||
			(config.passphrase[SLOT_PREVIOUS] && config.passphrase[SLOT_PREVIOUS][0]))
			ereport(WARNING,
					(errmsg("secretenv.kek_passphrase_command is set, so the passphrase settings are ignored"),
					 errhint("Remove secretenv.kek_passphrase and secretenv.kek_previous_passphrase from the configuration.")));
	}
	else if (slot_uses_default(SLOT_CURRENT))
		ereport(WARNING,
				(errmsg("secretenv is using its built-in development passphrase"),
				 errdetail("secretenv.kek_passphrase is not set, so secrets are encrypted under a publicly known key."),
				 errhint("Set secretenv.kek_passphrase in postgresql.conf, then rotate existing secrets with secretenv.secret_rotate_all().")));
	else if (strlen(config.passphrase[SLOT_CURRENT]) < SE_MIN_RECOMMENDED_PASSPHRASE_LEN)
		ereport(WARNING,
				(errmsg("secretenv.kek_passphrase is shorter than %d characters",
						SE_MIN_RECOMMENDED_PASSPHRASE_LEN),
				 errhint("Use a long random passphrase, for example 48 characters from a password generator.")));
}

int32
se_keyring_current_version(void)
{
	return config.version[SLOT_CURRENT];
}

/* Version of the previous KEK, 0 if none is configured. */
int32
se_keyring_previous_version(void)
{
	return config.version[SLOT_PREVIOUS];
}

bool
se_keyring_has_version(int32 version)
{
	return slot_for_version(version) >= 0;
}

bool
se_keyring_using_default(int32 version)
{
	int			slot = slot_for_version(version);

	return slot >= 0 && slot_uses_default(slot);
}

uint64
se_keyring_generation(void)
{
	return config_generation;
}

/*
 * The KEK of a version, derived if need be.  ERROR if no KEK is configured
 * for that version.  The pointer stays valid until the next configuration
 * change; callers use it within one call.
 */
const uint8_t *
se_keyring_kek(int32 version)
{
	int			slot;

	warn_about_configuration();

	slot = slot_for_version(version);
	if (slot < 0)
		ereport(ERROR,
				(errcode(ERRCODE_SECRETENV_KEK_NOT_CONFIGURED),
				 errmsg("no KEK is configured for version %d", version),
				 errdetail("The current KEK is version %d%s.",
						   config.version[SLOT_CURRENT],
						   config.version[SLOT_PREVIOUS] > 0 ? " and a previous KEK is configured" : ""),
				 errhint("Set secretenv.kek_previous_passphrase and secretenv.kek_previous_version to the KEK of version %d and reload.",
						 version)));

	if (slots[slot].generation != config_generation || !slots[slot].derived)
	{
		KekFailure	failures[NUM_SLOTS];

		refresh_all_slots(failures);
		if (failures[slot] != KEK_OK)
			report_kek_failure(ERROR, version, failures[slot]);
	}
	return secure_keys->kek[slot];
}

/*
 * The KEK of a version, or NULL when no KEK is configured for it or it
 * cannot be obtained right now (the passphrase command failed).  Unlike
 * se_keyring_kek() this never raises an ERROR for those cases: the key
 * health check uses it to describe the keys, and leaves reporting the
 * failure to the call that needs the KEK.
 */
const uint8_t *
se_keyring_kek_if_available(int32 version)
{
	int			slot = slot_for_version(version);
	KekFailure	failures[NUM_SLOTS];

	if (slot < 0)
		return NULL;
	if (slots[slot].generation != config_generation || !slots[slot].derived)
	{
		refresh_all_slots(failures);
		if (failures[slot] != KEK_OK)
			return NULL;
	}
	return secure_keys->kek[slot];
}

/* The key_config() part of status(): never any key material. */
PG_FUNCTION_INFO_V1(secret_key_config);
Datum
secret_key_config(PG_FUNCTION_ARGS)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"current_version\": %d, \"previous_version\": %s, "
					 "\"using_default_passphrase\": %s, "
					 "\"previous_using_default_passphrase\": %s, "
					 "\"preloaded\": %s, \"key_memory_locked\": %s, "
					 "\"kek_derivations_in_this_process\": " UINT64_FORMAT "}",
					 config.version[SLOT_CURRENT],
					 config.version[SLOT_PREVIOUS] > 0 ?
					 psprintf("%d", config.version[SLOT_PREVIOUS]) : "null",
					 slot_uses_default(SLOT_CURRENT) ? "true" : "false",
					 config.version[SLOT_PREVIOUS] > 0 ?
					 (slot_uses_default(SLOT_PREVIOUS) ? "true" : "false") : "null",
					 preloaded ? "true" : "false",
					 secure_keys_locked ? "true" : "false",
					 derivations_pid == MyProcPid ? derivations : 0);
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}
