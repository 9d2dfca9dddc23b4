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
 * derived once per process per (version, salt, passphrase source) and kept
 * in secure memory (locked, excluded from core dumps, wiped on reuse).  The
 * assign hooks of the key GUCs only record the new configuration and bump a
 * generation counter; a slot whose generation is stale is re-derived on its
 * next use, unless the configuration it was derived from is in fact
 * unchanged (a reload that rewrote the same values) or the other slot holds
 * the same KEK (the previous KEK becoming current).
 *
 * With shared_preload_libraries the postmaster derives both slots at start
 * and again once per reload that changes them (after the reload has
 * assigned all its settings, see postmaster_config_changed), so every
 * backend forked later inherits ready KEKs and no connection pays for
 * PBKDF2.  Without preload each backend derives on first use.
 *
 * Passphrases only in secure memory.  guc.c keeps a setting's value in
 * ordinary malloc'd strings, copies it into every parallel query's shared
 * memory, and never wipes it.  So the check hook of a passphrase setting
 * moves the passphrase into secure memory and hands guc.c a placeholder
 * instead: "secretenv-placeholder:" and the hex of a keyed tag of the
 * passphrase (HMAC-SHA256 under a random key drawn once per postmaster, or
 * per backend without preload, and kept in secure memory).  Equal
 * passphrases give equal placeholders in every process forked from one
 * postmaster; a placeholder tells nothing to anyone without that key.  What
 * guc.c stores, reports on reload and serializes for parallel workers is
 * the placeholder.  A passphrase in secure memory is kept while a setting
 * refers to it (guc.c always runs the check hook before assigning a value,
 * so an assign hook may forget what no setting refers to any more).
 *
 * Parallel workers.  A worker restores its leader's settings, placeholders
 * included, and must not run the passphrase command nor PBKDF2 (DESIGN
 * §7a): it looks for a KEK of the leader's (version, salt, source) among
 * those it inherited from the postmaster, and raises an ERROR if there is
 * none (no preload, or a leader whose configuration differs from the
 * postmaster's).
 *
 * Passphrases come from the GUCs or, better for production, from
 * secretenv.kek_passphrase_command: a command run by the server (like
 * ssl_passphrase_command) whose first output line is the passphrase of the
 * version substituted for %v.  Its output is never logged or quoted.
 *
 * Closed by default (DESIGN §8a).  A version is configured only by a
 * passphrase command, by a passphrase setting, or, while a superuser has
 * set secretenv.allow_development_passphrase, by MLflow's development
 * passphrase; otherwise every operation that needs its KEK fails (22S04),
 * so a misspelt setting name stores nothing under a public key.  Without
 * shared_preload_libraries a passphrase written in the configuration sat
 * in a placeholder GUC that every role could read until the library was
 * loaded, so it is refused (55000): the commands work either way.
 *
 * Every reload re-runs the passphrase command: its assign hook, which
 * guc.c calls on every reload of a file that sets it, changed or not,
 * counts as a configuration change.  In the preloading postmaster that
 * runs the command once per version at the end of the reload, and a
 * shared counter says whether that changed any KEK; a backend (which
 * processes the reload after the postmaster has) runs the command on its
 * next use of a KEK only if it did, or, without preload, always.  A KEK
 * is identified by the tag of the passphrase it was derived from, so a
 * command that prints what it printed before costs no PBKDF2.
 *
 * One derivation per reload (DESIGN §8d).  With preload the postmaster,
 * which processes a reload before it signals any backend, publishes the
 * KEKs it derived or fetched in a shared mapping of its own (secure
 * memory: locked, excluded from core dumps, no name, not part of the
 * server's shared memory segment, lost on exec), each with the version,
 * salt and source tag it stands for, under a sequence counter (odd while
 * the postmaster writes).  A backend whose configuration changed takes a
 * published KEK of exactly its (version, salt, source) instead of running
 * the command or PBKDF2, so a reload costs one derivation per changed
 * version for the whole server; only when none matches (a failure in the
 * postmaster, no preload) does it derive on its own.  The mapping holds
 * nothing that the backends forked from the postmaster did not already
 * hold in their own secure memory, and only such processes map it.
 *
 * Key commands (DESIGN §8d).  secretenv.kek_key_command (current version)
 * and secretenv.kek_previous_key_command (previous version; usually the
 * same command line, told apart by %v) print the KEK itself, 32 bytes as
 * hex or base64, typically a data key that a KMS decrypts: no PBKDF2.  A
 * version has exactly one source: a slot whose key command is set while
 * its passphrase setting or the passphrase command (which serves every
 * version) is set too is a configuration error (F0000), never a silent
 * choice.  Per-slot key commands let a rotation go from a passphrase
 * version to a KMS version and back.  A key command's KEK is identified
 * by a keyed tag of the key, as a passphrase is, so everything above
 * (inheritance from the postmaster, parallel workers, re-runs on reload,
 * the previous KEK becoming current by copy) works the same.
 *
 * The passphrase GUCs are superuser-only, hidden from SHOW ALL and
 * pg_settings, refused by ALTER SYSTEM, and their show hook prints a mask
 * even to superusers: no SQL route reads a passphrase back.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "access/parallel.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "port.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "crypto/se_crypto.h"
#include "keys/kek_retirement.h"
#include "keys/keyring.h"
#include "keys/passphrase_command.h"
#include "pg_compat.h"
#include "se_messages.h"

/*
 * Used when no passphrase is configured.  It is MLflow's development
 * passphrase, so that unconfigured secretenv and unconfigured MLflow with
 * the same salt read each other's rows; it protects nothing.
 */
#define SE_DEVELOPMENT_PASSPHRASE "mlflow-default-kek-passphrase-for-development-only"
#define SE_DEFAULT_SALT "secretenv-kek-v1"
#define SE_MAX_PASSPHRASE_LEN 4096
#define SE_MIN_RECOMMENDED_PASSPHRASE_LEN 32

/* What guc.c holds instead of a passphrase: prefix, then hex of a tag. */
#define PLACEHOLDER_PREFIX "secretenv-placeholder:"
#define PLACEHOLDER_PREFIX_LEN (sizeof(PLACEHOLDER_PREFIX) - 1)
#define PLACEHOLDER_LEN (PLACEHOLDER_PREFIX_LEN + 2 * SE_IDENTITY_TAG_LEN)

/*
 * Domains of the identity tags: a passphrase, a passphrase command, a key
 * command's command line, a raw KEK that a key command printed.
 */
#define TAG_PASSPHRASE 'p'
#define TAG_COMMAND 'c'
#define TAG_KEY_COMMAND 'k'
#define TAG_RAW_KEY 'r'

/*
 * Passphrases kept in secure memory: the two that the settings refer to,
 * and room for those a reload validates before it assigns them.
 */
#define KEPT_PASSPHRASES 4

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
static char *kek_key_command_guc = NULL;
static char *kek_previous_key_command_guc = NULL;
static bool allow_development_guc = false;

/*
 * The configuration as the assign hooks last saw it.  guc.c stores the new
 * value into the variable only after the assign hook returns, so the hooks
 * keep their own copy; derivation reads this, never the variables.  The
 * string pointers are guc.c's, valid until the next assignment; a
 * passphrase is an empty string or a placeholder, never the passphrase.
 */
typedef struct KeyConfig
{
	const char *passphrase[NUM_SLOTS];
	int32		version[NUM_SLOTS];
	const char *salt;
	const char *command;
	const char *key_command[NUM_SLOTS];
	bool		allow_development;
} KeyConfig;

static KeyConfig config;

/* Bumped whenever a key GUC takes a different value. */
static uint64 config_generation = 1;

/* A passphrase that a setting refers to by its placeholder. */
typedef struct KeptPassphrase
{
	bool		used;
	uint8_t		tag[SE_IDENTITY_TAG_LEN];
	char		bytes[SE_MAX_PASSPHRASE_LEN + 1];
} KeptPassphrase;

/*
 * Long-lived secrets, in one secure allocation made by se_keyring_init
 * (so no hook ever needs to allocate it): the derived KEKs, the key of the
 * placeholders' tags, the passphrases, and the buffer a passphrase
 * command's output is read into.  That buffer is wiped after each use; an
 * ERROR thrown while the command runs leaves its content here, in locked
 * and undumped memory, until the next use wipes it.
 */
typedef struct SecureKeys
{
	uint8_t		kek[NUM_SLOTS][SE_KEY_LEN];
	uint8_t		tag_key[SE_KEY_LEN];
	uint8_t		raw_kek[SE_KEY_LEN];	/* a key command's KEK, until placed */
	char		command_output[SE_MAX_PASSPHRASE_LEN + 2];
	KeptPassphrase kept[KEPT_PASSPHRASES];
} SecureKeys;

/*
 * A slot's KEK and what it was derived from: version, salt, the tag of the
 * passphrase, and the tag of its source (the passphrase, or the command
 * line when a command is configured; a parallel worker, which never runs
 * the command, matches its leader's settings by it).  Never the
 * passphrase itself.
 */
typedef struct SlotState
{
	bool		derived;		/* kek[] holds a KEK for the fields below */
	int32		version;
	char		salt[NAMEDATALEN * 4];
	uint8_t		passphrase[SE_IDENTITY_TAG_LEN];
	uint8_t		source[SE_IDENTITY_TAG_LEN];
	uint64		generation;		/* config_generation when last validated */
} SlotState;

/* Where a slot's passphrase comes from. */
typedef enum KeySource
{
	SOURCE_KEY_COMMAND,			/* the slot's key command: the KEK itself */
	SOURCE_COMMAND,				/* secretenv.kek_passphrase_command */
	SOURCE_SETTING,				/* the slot's passphrase setting, preloaded */
	SOURCE_DEVELOPMENT,			/* none set; development passphrase allowed */
	SOURCE_NONE,				/* none set: the version is not configured */
	SOURCE_EXPOSED,				/* a setting readable before the library loaded */
	SOURCE_CONFLICT				/* a key command and another source */
} KeySource;

/* key_config()'s name of each source. */
static const char *const key_source_names[] = {
	"key command", "command", "passphrase", "development passphrase",
	"not configured", "passphrase refused without preload", "two sources"
};

static SecureKeys *secure_keys = NULL;
static SlotState slots[NUM_SLOTS];

/* Set once _PG_init has defined every GUC. */
static bool keyring_ready = false;

/* Loaded through shared_preload_libraries (KEKs inherited from postmaster). */
static bool preloaded = false;

/*
 * With preload: how many of the postmaster's refreshes changed a KEK (or
 * failed), in shared memory for the processes it forked before them, and
 * the count this process last acted on (inherited at fork).  Also a count
 * of the postmaster's refreshes, odd while one runs, which key_freshness.c
 * waits on: /proc cannot tell a postmaster waiting for its passphrase or
 * key command from one idle in its server loop (both sleep, and until the
 * command's exec its child is a "postgres" process like any other).
 */
typedef struct KeyringShared
{
	pg_atomic_uint64 postmaster_changes;
	pg_atomic_uint32 postmaster_refreshes;
} KeyringShared;

static KeyringShared *keyring_shared = NULL;

/* A KEK the postmaster published, and what it was derived from. */
typedef struct PublishedKek
{
	bool		valid;
	int32		version;
	char		salt[NAMEDATALEN * 4];
	uint8_t		passphrase[SE_IDENTITY_TAG_LEN];
	uint8_t		source[SE_IDENTITY_TAG_LEN];
	uint8_t		kek[SE_KEY_LEN];
} PublishedKek;

/* The postmaster's KEKs, in secure memory shared with its children. */
typedef struct PublishedKeks
{
	pg_atomic_uint64 sequence;	/* odd while the postmaster writes */
	PublishedKek slot[NUM_SLOTS];
} PublishedKeks;

static PublishedKeks *published = NULL;
static uint64 seen_postmaster_changes = 0;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* Per-backend warnings already given for this configuration generation. */
static uint64 warned_generation = 0;

/* Why a slot could not be brought up to date. */
typedef enum KekFailure
{
	KEK_OK,
	KEK_COMMAND_FAILED,
	KEK_DERIVATION_FAILED,
	KEK_NOT_INHERITED,			/* parallel worker: no inherited KEK matches */
	KEK_PASSPHRASE_FORGOTTEN,	/* no kept passphrase for the placeholder */
	KEK_NOT_CONFIGURED,			/* SOURCE_NONE */
	KEK_PASSPHRASE_EXPOSED,		/* SOURCE_EXPOSED */
	KEK_TWO_SOURCES				/* SOURCE_CONFLICT */
} KekFailure;

/*
 * PBKDF2 runs in this process (a forked backend inherits the postmaster's
 * count, hence the pid), reported by key_config() so tests can prove that
 * no call derives a KEK.
 */
static uint64 derivations = 0;
static int	derivations_pid = 0;

/*
 * How and why each slot's last command run failed (never its output): per
 * slot, since one refresh runs the command for both.
 */
static se_passphrase_result last_command_result[NUM_SLOTS];
static char last_command_failure[NUM_SLOTS][SE_PASSPHRASE_REASON_LEN];

static bool
command_configured(void)
{
	return config.command != NULL && config.command[0] != '\0';
}

static bool
passphrase_set(int slot)
{
	const char *p = config.passphrase[slot];

	return p != NULL && p[0] != '\0';
}

static bool
key_command_set(int slot)
{
	const char *c = config.key_command[slot];

	return c != NULL && c[0] != '\0';
}

static KeySource
slot_key_source(int slot)
{
	if (key_command_set(slot))
		return command_configured() || passphrase_set(slot) ?
			SOURCE_CONFLICT : SOURCE_KEY_COMMAND;
	if (command_configured())
		return SOURCE_COMMAND;
	if (passphrase_set(slot))
		return preloaded ? SOURCE_SETTING : SOURCE_EXPOSED;
	return config.allow_development ? SOURCE_DEVELOPMENT : SOURCE_NONE;
}

static bool
source_usable(KeySource source)
{
	return source == SOURCE_KEY_COMMAND || source == SOURCE_COMMAND ||
		source == SOURCE_SETTING || source == SOURCE_DEVELOPMENT;
}

static bool
slot_uses_default(int slot)
{
	return slot_key_source(slot) == SOURCE_DEVELOPMENT;
}

/* The setting that holds a slot's passphrase. */
static const char *
passphrase_setting_name(int slot)
{
	return slot == SLOT_CURRENT ? "secretenv.kek_passphrase" :
		"secretenv.kek_previous_passphrase";
}

/* The setting that holds a slot's key command. */
static const char *
key_command_setting_name(int slot)
{
	return slot == SLOT_CURRENT ? "secretenv.kek_key_command" :
		"secretenv.kek_previous_key_command";
}

/* What failed, as the key failure KekFailure describes it. */
static KekFailure
source_failure(KeySource source)
{
	return source == SOURCE_NONE ? KEK_NOT_CONFIGURED :
		source == SOURCE_CONFLICT ? KEK_TWO_SOURCES : KEK_PASSPHRASE_EXPOSED;
}

/*
 * Run a slot's key command for its version (passphrase_command.c): the
 * KEK goes to secure_keys->raw_kek; on failure keep the reason.
 */
static bool
run_key_command(int slot, int32 version)
{
	char		reason[SE_PASSPHRASE_REASON_LEN];
	se_passphrase_result result;

	result = se_key_command_run(config.key_command[slot], version,
								secure_keys->command_output,
								sizeof(secure_keys->command_output),
								secure_keys->raw_kek, reason, sizeof(reason));
	if (result == SE_PASSPHRASE_OK)
		return true;
	last_command_result[slot] = result;
	strlcpy(last_command_failure[slot], reason, sizeof(last_command_failure[slot]));
	return false;
}

/*
 * Run the passphrase command for a version (passphrase_command.c) into buf;
 * on failure keep the reason for the error report.
 */
static bool
run_passphrase_command(int slot, int32 version, char *buf, size_t bufsize)
{
	char		reason[SE_PASSPHRASE_REASON_LEN];
	se_passphrase_result result;

	/* At most SE_MAX_PASSPHRASE_LEN bytes, as from the GUCs. */
	result = se_passphrase_command_run(config.command, version,
									   buf, Min(bufsize, SE_MAX_PASSPHRASE_LEN + 1),
									   reason, sizeof(reason));
	if (result == SE_PASSPHRASE_OK)
		return true;
	last_command_result[slot] = result;
	strlcpy(last_command_failure[slot], reason, sizeof(last_command_failure[slot]));
	return false;
}

/* Is this string one of our placeholders (prefix, then lower-case hex)? */
static bool
is_placeholder(const char *value)
{
	if (value == NULL || strlen(value) != PLACEHOLDER_LEN ||
		strncmp(value, PLACEHOLDER_PREFIX, PLACEHOLDER_PREFIX_LEN) != 0)
		return false;
	for (const char *p = value + PLACEHOLDER_PREFIX_LEN; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			return false;
	return true;
}

static void
placeholder_tag(const char *placeholder, uint8_t tag[SE_IDENTITY_TAG_LEN])
{
	const char *hex = placeholder + PLACEHOLDER_PREFIX_LEN;

	for (int i = 0; i < SE_IDENTITY_TAG_LEN; i++)
	{
		int			hi = hex[2 * i] <= '9' ? hex[2 * i] - '0' : hex[2 * i] - 'a' + 10;
		int			lo = hex[2 * i + 1] <= '9' ? hex[2 * i + 1] - '0' : hex[2 * i + 1] - 'a' + 10;

		tag[i] = (uint8_t) (hi << 4 | lo);
	}
}

static bool
identity_tag(uint8_t domain, const char *value, uint8_t tag[SE_IDENTITY_TAG_LEN])
{
	return secure_keys != NULL &&
		se_identity_tag(secure_keys->tag_key, domain, (const uint8_t *) value,
						strlen(value), tag) == SE_OK;
}

/* The kept passphrase with this tag, or NULL. */
static KeptPassphrase *
find_kept(const uint8_t tag[SE_IDENTITY_TAG_LEN])
{
	if (secure_keys == NULL)
		return NULL;
	for (int i = 0; i < KEPT_PASSPHRASES; i++)
	{
		KeptPassphrase *k = &secure_keys->kept[i];

		if (k->used && memcmp(k->tag, tag, SE_IDENTITY_TAG_LEN) == 0)
			return k;
	}
	return NULL;
}

/* The kept passphrase a slot's setting refers to, or NULL. */
static const KeptPassphrase *
kept_for_setting(int slot)
{
	uint8_t		tag[SE_IDENTITY_TAG_LEN];

	if (!is_placeholder(config.passphrase[slot]))
		return NULL;
	placeholder_tag(config.passphrase[slot], tag);
	return find_kept(tag);
}

/* Does a passphrase setting in force refer to this kept passphrase? */
static bool
kept_in_use(const KeptPassphrase *k)
{
	for (int slot = 0; slot < NUM_SLOTS; slot++)
	{
		uint8_t		tag[SE_IDENTITY_TAG_LEN];

		if (!is_placeholder(config.passphrase[slot]))
			continue;
		placeholder_tag(config.passphrase[slot], tag);
		if (memcmp(k->tag, tag, SE_IDENTITY_TAG_LEN) == 0)
			return true;
	}
	return false;
}

/*
 * Keep a passphrase under its tag.  The settings in force refer to at most
 * NUM_SLOTS entries, so a free or forgettable one always exists.
 */
static bool
keep_passphrase(const uint8_t tag[SE_IDENTITY_TAG_LEN], const char *value)
{
	KeptPassphrase *target = find_kept(tag);

	if (target != NULL)
		return true;
	for (int i = 0; i < KEPT_PASSPHRASES && target == NULL; i++)
		if (!secure_keys->kept[i].used)
			target = &secure_keys->kept[i];
	for (int i = 0; i < KEPT_PASSPHRASES && target == NULL; i++)
		if (!kept_in_use(&secure_keys->kept[i]))
			target = &secure_keys->kept[i];
	if (target == NULL)
		return false;
	se_wipe(target, sizeof(KeptPassphrase));
	memcpy(target->tag, tag, SE_IDENTITY_TAG_LEN);
	strlcpy(target->bytes, value, sizeof(target->bytes));
	target->used = true;
	return true;
}

/* Wipe every kept passphrase that no setting in force refers to. */
static void
forget_unused_passphrases(void)
{
	if (secure_keys == NULL)
		return;
	for (int i = 0; i < KEPT_PASSPHRASES; i++)
		if (secure_keys->kept[i].used && !kept_in_use(&secure_keys->kept[i]))
			se_wipe(&secure_keys->kept[i], sizeof(KeptPassphrase));
}

/*
 * What a slot's configuration names as its source, as a tag: the command
 * line when a command is configured, else the passphrase setting's
 * placeholder, else the development passphrase.  For a passphrase it is
 * also the tag of the passphrase; a command's is known once it has run.
 */
static bool
slot_source(int slot, uint8_t source[SE_IDENTITY_TAG_LEN])
{
	const char *p = config.passphrase[slot];

	if (key_command_set(slot))
		return identity_tag(TAG_KEY_COMMAND, config.key_command[slot], source);
	if (command_configured())
		return identity_tag(TAG_COMMAND, config.command, source);
	if (p == NULL || p[0] == '\0')
		return identity_tag(TAG_PASSPHRASE, SE_DEVELOPMENT_PASSPHRASE, source);
	if (!is_placeholder(p))
		return false;
	placeholder_tag(p, source);
	return true;
}

/* Does a slot hold the KEK of this version, salt and passphrase? */
static bool
slot_holds(const SlotState *s, int32 version, const char *salt,
		   const uint8_t passphrase[SE_IDENTITY_TAG_LEN])
{
	return s->derived && s->version == version && strcmp(s->salt, salt) == 0 &&
		memcmp(s->passphrase, passphrase, SE_IDENTITY_TAG_LEN) == 0;
}

/* Does a slot hold a KEK of this version and salt from this source? */
static bool
slot_holds_source(const SlotState *s, int32 version, const char *salt,
				  const uint8_t source[SE_IDENTITY_TAG_LEN])
{
	return s->derived && s->version == version && strcmp(s->salt, salt) == 0 &&
		memcmp(s->source, source, SE_IDENTITY_TAG_LEN) == 0;
}

/*
 * The slot's kek[] now holds the KEK of these inputs, up to date with the
 * configuration: what slot_holds compares with from now on.
 */
static void
mark_slot_derived(SlotState *s, int32 version, const char *salt,
				  const uint8_t passphrase[SE_IDENTITY_TAG_LEN],
				  const uint8_t source[SE_IDENTITY_TAG_LEN])
{
	s->version = version;
	strlcpy(s->salt, salt, sizeof(s->salt));
	memcpy(s->passphrase, passphrase, SE_IDENTITY_TAG_LEN);
	memcpy(s->source, source, SE_IDENTITY_TAG_LEN);
	s->derived = true;
	s->generation = config_generation;
}

/* Copy the other slot's KEK into this one: no PBKDF2. */
static void
copy_other_slot(int slot)
{
	SlotState  *s = &slots[slot];
	SlotState  *other = &slots[1 - slot];

	s->derived = false;
	memcpy(secure_keys->kek[slot], secure_keys->kek[1 - slot], SE_KEY_LEN);
	mark_slot_derived(s, other->version, other->salt, other->passphrase,
					  other->source);
}

static void
report_kek_failure(int elevel, int slot, KekFailure failure)
{
	int32		version = config.version[slot];

	if (failure == KEK_COMMAND_FAILED && slot_key_source(slot) == SOURCE_KEY_COMMAND)
		ereport(elevel,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION),
				 errmsg("could not obtain the KEK of version %d from its key command", version),
				 errdetail("%s failed: %s.", key_command_setting_name(slot),
						   last_command_failure[slot]),
				 last_command_result[slot] == SE_PASSPHRASE_TIMED_OUT ?
				 errhint("Make the command finish within secretenv.kek_passphrase_command_timeout, or raise that setting.") :
				 last_command_result[slot] == SE_PASSPHRASE_INTERRUPTED ? 0 :
				 errhint("The command must print the 32-byte KEK as 64 hex digits or as base64 on one line, and exit with status 0.")));
	else if (failure == KEK_TWO_SOURCES)
		ereport(elevel,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("KEK version %d has two sources", version),
				 errdetail("%s is set, and so is %s.", key_command_setting_name(slot),
						   command_configured() ? "secretenv.kek_passphrase_command" :
						   passphrase_setting_name(slot)),
				 errhint("Configure each KEK version by exactly one source: remove one of the two settings and reload.")));
	else if (failure == KEK_COMMAND_FAILED)
		ereport(elevel,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION),
				 errmsg("could not obtain the KEK passphrase of version %d", version),
				 errdetail("The passphrase command failed: %s.", last_command_failure[slot]),
				 last_command_result[slot] == SE_PASSPHRASE_TIMED_OUT ?
				 errhint("Make the command finish within secretenv.kek_passphrase_command_timeout, or raise that setting.") :
				 last_command_result[slot] == SE_PASSPHRASE_INTERRUPTED ? 0 :
				 errhint("The command must print the passphrase on its first line and exit with status 0.")));
	else if (failure == KEK_NOT_INHERITED)
		ereport(elevel,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("parallel worker has no KEK of version %d", version),
				 errdetail("A parallel worker never runs the passphrase command nor derives a KEK; none of the KEKs it inherited from the postmaster matches its leader's key settings."),
				 errhint("Add secretenv to shared_preload_libraries and restart the server, or run this query without parallel workers (max_parallel_workers_per_gather = 0).")));
	else if (failure == KEK_PASSPHRASE_FORGOTTEN)
		ereport(elevel,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the passphrase of KEK version %d is not available in this process", version),
				 errhint("Reload the server configuration.")));
	else if (failure == KEK_NOT_CONFIGURED)
		ereport(elevel,
				(errcode(ERRCODE_SECRETENV_KEK_NOT_CONFIGURED),
				 errmsg("no KEK is configured for version %d", version),
				 errdetail("None of %s, secretenv.kek_passphrase_command and %s is set, and secretenv.allow_development_passphrase is off.",
						   key_command_setting_name(slot), passphrase_setting_name(slot)),
				 errhint("Set secretenv.kek_passphrase_command (or %s, with secretenv in shared_preload_libraries) in postgresql.conf and reload; "
						 "check the spelling of every secretenv setting there. "
						 "For a development store only, set secretenv.allow_development_passphrase = on. "
						 "For a KEK kept in a KMS, set %s instead.",
						 passphrase_setting_name(slot), key_command_setting_name(slot))));
	else if (failure == KEK_PASSPHRASE_EXPOSED)
		ereport(elevel,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("refusing the KEK passphrase of version %d written in the configuration", version),
				 errdetail("secretenv is not in shared_preload_libraries, so %s was readable by every role until the library was loaded.",
						   passphrase_setting_name(slot)),
				 errhint("Add secretenv to shared_preload_libraries and restart the server, "
						 "or replace %s with secretenv.kek_passphrase_command and reload.",
						 passphrase_setting_name(slot))));
	else
		ereport(elevel,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION),
				 errmsg("could not derive the KEK of version %d", version)));
}

/*
 * Forget a slot's KEK: its version is not configured any more.
 */
static void
clear_slot(int slot)
{
	slots[slot].derived = false;
	if (secure_keys != NULL)
		se_wipe(secure_keys->kek[slot], SE_KEY_LEN);
}

/*
 * Derive a slot's KEK from a passphrase with PBKDF2.  The slot's fields
 * change only on success; kek[] is marked not derived before it is
 * overwritten, so "derived" never describes a half-written or wiped KEK.
 */
static KekFailure
derive_slot(int slot, const char *pass, int32 version, const char *salt,
			const uint8_t passphrase[SE_IDENTITY_TAG_LEN],
			const uint8_t source[SE_IDENTITY_TAG_LEN])
{
	SlotState  *s = &slots[slot];
	se_status	status;

	s->derived = false;
	if (derivations_pid != MyProcPid)
	{
		derivations_pid = MyProcPid;
		derivations = 0;
	}
	derivations++;
	/* Counted by test 077 in the postmaster's log; never key material. */
	ereport(DEBUG1,
			(errmsg_internal("secretenv runs PBKDF2 for KEK version %d", version)));
	status = se_derive_kek((const uint8_t *) pass, strlen(pass),
						   (const uint8_t *) salt, strlen(salt),
						   (uint32_t) version, secure_keys->kek[slot]);
	if (status != SE_OK)
	{
		se_wipe(secure_keys->kek[slot], SE_KEY_LEN);
		return KEK_DERIVATION_FAILED;
	}
	mark_slot_derived(s, version, salt, passphrase, source);
	return KEK_OK;
}

/*
 * A parallel worker never runs the command nor PBKDF2: it uses a KEK it
 * inherited from the postmaster for its leader's (version, salt, source).
 */
static KekFailure
refresh_slot_in_worker(int slot, int32 version, const char *salt,
					   const uint8_t source[SE_IDENTITY_TAG_LEN])
{
	if (slot_holds_source(&slots[slot], version, salt, source))
	{
		slots[slot].generation = config_generation;
		return KEK_OK;
	}
	if (slot_holds_source(&slots[1 - slot], version, salt, source))
	{
		copy_other_slot(slot);
		return KEK_OK;
	}
	return KEK_NOT_INHERITED;
}

/*
 * In the postmaster: publish its KEKs for the backends (see the header).
 * A slot that failed is published as invalid, and wiped.
 */
static void
publish_keks(const KekFailure failures[NUM_SLOTS])
{
	uint64		sequence;

	if (published == NULL)
		return;
	sequence = pg_atomic_read_u64(&published->sequence);
	pg_atomic_write_u64(&published->sequence, sequence + 1);
	pg_write_barrier();
	for (int slot = 0; slot < NUM_SLOTS; slot++)
	{
		PublishedKek *p = &published->slot[slot];
		const SlotState *s = &slots[slot];

		se_wipe(p, sizeof(PublishedKek));
		if (config.version[slot] <= 0 || failures[slot] != KEK_OK || !s->derived)
			continue;
		p->version = s->version;
		strlcpy(p->salt, s->salt, sizeof(p->salt));
		memcpy(p->passphrase, s->passphrase, SE_IDENTITY_TAG_LEN);
		memcpy(p->source, s->source, SE_IDENTITY_TAG_LEN);
		memcpy(p->kek, secure_keys->kek[slot], SE_KEY_LEN);
		p->valid = true;
	}
	pg_write_barrier();
	pg_atomic_write_u64(&published->sequence, sequence + 2);
}

/*
 * In a backend: take the KEK the postmaster published for this version,
 * salt and source, if any.  The copy is checked against the sequence
 * counter, so a KEK half-written by the postmaster is never marked derived.
 */
static bool
take_published(int slot, int32 version, const char *salt,
			   const uint8_t source[SE_IDENTITY_TAG_LEN])
{
	SlotState  *s = &slots[slot];

	if (published == NULL || !IsUnderPostmaster)
		return false;
	for (int attempt = 0; attempt < 1000; attempt++)
	{
		uint64		before = pg_atomic_read_u64(&published->sequence);
		int			found = -1;
		uint8_t		passphrase[SE_IDENTITY_TAG_LEN];

		if (before % 2 == 1)
		{
			pg_usleep(1000L);
			continue;
		}
		pg_read_barrier();
		for (int i = 0; i < NUM_SLOTS && found < 0; i++)
		{
			const PublishedKek *p = &published->slot[i];

			if (p->valid && p->version == version && strcmp(p->salt, salt) == 0 &&
				memcmp(p->source, source, SE_IDENTITY_TAG_LEN) == 0)
			{
				/* kek[] is overwritten: not derived until the copy is known whole. */
				s->derived = false;
				memcpy(secure_keys->kek[slot], p->kek, SE_KEY_LEN);
				memcpy(passphrase, p->passphrase, SE_IDENTITY_TAG_LEN);
				found = i;
			}
		}
		pg_read_barrier();
		if (pg_atomic_read_u64(&published->sequence) != before)
			continue;
		if (found < 0)
			return false;
		mark_slot_derived(s, version, salt, passphrase, source);
		return true;
	}
	return false;
}

/*
 * refresh_slot for a key command: run it (never in a parallel worker) and
 * place the KEK it printed, unless a slot already holds that very KEK.
 * Only a complete, valid key ever reaches kek[]: on any failure the slot
 * keeps its stale generation, so every use of it raises the error.
 */
static KekFailure
refresh_slot_from_key_command(int slot, int32 version, const char *salt,
							  const uint8_t source[SE_IDENTITY_TAG_LEN])
{
	SlotState  *s = &slots[slot];
	uint8_t		key_tag[SE_IDENTITY_TAG_LEN];
	KekFailure	result = KEK_OK;

	if (!run_key_command(slot, version))
		return KEK_COMMAND_FAILED;
	if (se_identity_tag(secure_keys->tag_key, TAG_RAW_KEY, secure_keys->raw_kek,
						SE_KEY_LEN, key_tag) != SE_OK)
		result = KEK_DERIVATION_FAILED;
	else if (slot_holds(s, version, salt, key_tag))
		mark_slot_derived(s, version, salt, key_tag, source);
	else if (slot_holds(&slots[1 - slot], version, salt, key_tag))
	{
		copy_other_slot(slot);
		memcpy(s->source, source, SE_IDENTITY_TAG_LEN);
	}
	else
	{
		s->derived = false;
		memcpy(secure_keys->kek[slot], secure_keys->raw_kek, SE_KEY_LEN);
		mark_slot_derived(s, version, salt, key_tag, source);
	}
	se_wipe(secure_keys->raw_kek, SE_KEY_LEN);
	return result;
}

/*
 * Bring a slot up to date with the configuration.  Never throws; the
 * caller decides whether a failure is an ERROR.  Obtain the passphrase
 * (run the command, or find the kept passphrase); PBKDF2 only when neither
 * slot already holds the KEK of that passphrase, version and salt: a
 * reload that left this KEK's inputs alone, or a command that prints what
 * it printed before, costs nothing, and the previous KEK becoming current
 * (or vice versa) is a copy.
 */
static KekFailure
refresh_slot(int slot)
{
	SlotState  *s = &slots[slot];
	const char *salt = config.salt ? config.salt : SE_DEFAULT_SALT;
	int32		version = config.version[slot];
	KeySource	key_source = slot_key_source(slot);
	char	   *output;
	const char *pass;
	uint8_t		source[SE_IDENTITY_TAG_LEN];
	uint8_t		passphrase[SE_IDENTITY_TAG_LEN];
	KekFailure	result;

	if (s->generation == config_generation && s->derived)
		return KEK_OK;
	if (!source_usable(key_source))
	{
		clear_slot(slot);
		return source_failure(key_source);
	}
	if (secure_keys == NULL || !slot_source(slot, source))
		return KEK_DERIVATION_FAILED;
	if (IsParallelWorker())
		return refresh_slot_in_worker(slot, version, salt, source);
	if (take_published(slot, version, salt, source))
		return KEK_OK;

	if (key_source == SOURCE_KEY_COMMAND)
		return refresh_slot_from_key_command(slot, version, salt, source);

	output = secure_keys->command_output;
	se_wipe(output, sizeof(secure_keys->command_output));
	if (key_source == SOURCE_COMMAND)
	{
		if (!run_passphrase_command(slot, version, output,
									sizeof(secure_keys->command_output)))
			return KEK_COMMAND_FAILED;
		if (!identity_tag(TAG_PASSPHRASE, output, passphrase))
		{
			se_wipe(output, sizeof(secure_keys->command_output));
			return KEK_DERIVATION_FAILED;
		}
		pass = output;
	}
	else if (key_source == SOURCE_DEVELOPMENT)
	{
		memcpy(passphrase, source, SE_IDENTITY_TAG_LEN);
		pass = SE_DEVELOPMENT_PASSPHRASE;
	}
	else
	{
		KeptPassphrase *kept = find_kept(source);

		if (kept == NULL)
			return KEK_PASSPHRASE_FORGOTTEN;
		memcpy(passphrase, source, SE_IDENTITY_TAG_LEN);
		pass = kept->bytes;
	}

	if (slot_holds(s, version, salt, passphrase))
	{
		mark_slot_derived(s, version, salt, passphrase, source);
		result = KEK_OK;
	}
	else if (slot_holds(&slots[1 - slot], version, salt, passphrase))
	{
		copy_other_slot(slot);
		memcpy(s->source, source, SE_IDENTITY_TAG_LEN);
		result = KEK_OK;
	}
	else
		result = derive_slot(slot, pass, version, salt, passphrase, source);
	se_wipe(output, sizeof(secure_keys->command_output));
	return result;
}

/*
 * Exchange the two slots' KEKs and what they were derived from, through
 * the secure scratch buffer (wiped after): no key material on the stack.
 */
static void
swap_slots(void)
{
	SlotState	state = slots[SLOT_CURRENT];

	memcpy(secure_keys->raw_kek, secure_keys->kek[SLOT_CURRENT], SE_KEY_LEN);
	memcpy(secure_keys->kek[SLOT_CURRENT], secure_keys->kek[SLOT_PREVIOUS], SE_KEY_LEN);
	memcpy(secure_keys->kek[SLOT_PREVIOUS], secure_keys->raw_kek, SE_KEY_LEN);
	se_wipe(secure_keys->raw_kek, SE_KEY_LEN);
	slots[SLOT_CURRENT] = slots[SLOT_PREVIOUS];
	slots[SLOT_PREVIOUS] = state;
}

/*
 * Bring every configured slot up to date.  In a rotation the new previous
 * KEK is the old current one: refreshing the previous slot first lets it
 * copy that KEK before the current slot is overwritten, so a rotation costs
 * one derivation, for the new KEK only.  A rotation undone (the two
 * versions exchanged) exchanges the KEKs, so it costs none.
 */
static void
refresh_all_slots(KekFailure failures[NUM_SLOTS])
{
	int			first = SLOT_CURRENT;

	if (secure_keys != NULL &&
		slots[SLOT_CURRENT].derived && slots[SLOT_PREVIOUS].derived &&
		slots[SLOT_CURRENT].version != slots[SLOT_PREVIOUS].version &&
		slots[SLOT_CURRENT].version == config.version[SLOT_PREVIOUS] &&
		slots[SLOT_PREVIOUS].version == config.version[SLOT_CURRENT])
		swap_slots();
	else if (slots[SLOT_CURRENT].derived &&
			 slots[SLOT_CURRENT].version == config.version[SLOT_PREVIOUS])
		first = SLOT_PREVIOUS;

	for (int i = 0; i < NUM_SLOTS; i++)
	{
		int			slot = i == 0 ? first : 1 - first;

		if (config.version[slot] > 0)
			failures[slot] = refresh_slot(slot);
		else
		{
			/* No previous version any more: its KEK must not linger. */
			clear_slot(slot);
			failures[slot] = KEK_OK;
		}
	}
}

/*
 * In the postmaster (preloaded), derive once the configuration has
 * changed, so that backends forked afterwards inherit the KEKs and open
 * ones take the published copies.  A failure is logged; backends retry,
 * and report it as an ERROR, on first use.
 */
static void
refresh_and_publish(void)
{
	KekFailure	failures[NUM_SLOTS];
	SlotState	before[NUM_SLOTS];
	bool		changed = false;

	memcpy(before, slots, sizeof(before));
	refresh_all_slots(failures);
	publish_keks(failures);
	for (int slot = 0; slot < NUM_SLOTS; slot++)
	{
		if (failures[slot] != KEK_OK)
		{
			report_kek_failure(LOG, slot, failures[slot]);
			changed = true;
		}
		else if (config.version[slot] > 0 &&
				 (!before[slot].derived ||
				  !slot_holds(&slots[slot], before[slot].version, before[slot].salt,
							  before[slot].passphrase)))
			changed = true;
	}
	/* Tell the backends forked earlier to run the command themselves. */
	if (changed)
	{
		seen_postmaster_changes++;
		if (keyring_shared != NULL)
			pg_atomic_write_u64(&keyring_shared->postmaster_changes,
								seen_postmaster_changes);
	}
}

/*
 * refresh_and_publish, with the count of refreshes odd while it runs, until
 * it has published the KEKs and counted the change (see KeyringShared).
 */
static void
refresh_in_postmaster(void)
{
	if (keyring_shared != NULL)
		pg_atomic_fetch_add_u32(&keyring_shared->postmaster_refreshes, 1);
	PG_TRY();
	{
		refresh_and_publish();
	}
	PG_FINALLY();
	{
		if (keyring_shared != NULL)
			pg_atomic_fetch_add_u32(&keyring_shared->postmaster_refreshes, 1);
	}
	PG_END_TRY();
}

/*
 * In a backend: the postmaster's count of refreshes (odd while one runs),
 * 0 without preload, where the postmaster never refreshes.
 */
uint32
se_keyring_postmaster_refreshes(void)
{
	if (keyring_shared == NULL || !IsUnderPostmaster)
		return 0;
	return pg_atomic_read_u32(&keyring_shared->postmaster_refreshes);
}

/*
 * A reload set the passphrase command to the same command line: must this
 * process run it again?  The postmaster always does.  A preloaded backend
 * processes a reload after the postmaster has, so it only needs to when
 * the postmaster's run changed a KEK; without preload, always.
 */
static bool
command_rerun_needed(void)
{
	uint64		changes;

	if (!IsUnderPostmaster || keyring_shared == NULL)
		return true;
	changes = pg_atomic_read_u64(&keyring_shared->postmaster_changes);
	if (changes == seen_postmaster_changes)
		return false;
	seen_postmaster_changes = changes;
	return true;
}

/*
 * The memory context that ProcessConfigFile (guc-file.l) creates for one
 * reload and deletes once every setting of the reload is assigned, before
 * the postmaster signals its children.
 */
#define RELOAD_CONTEXT_NAME "config file processing"

/* A refresh is registered on the reload's context and has not run yet. */
static bool postmaster_refresh_pending = false;
static MemoryContextCallback postmaster_refresh_callback;

static void
run_pending_refresh(void *arg)
{
	postmaster_refresh_pending = false;
	refresh_in_postmaster();
}

/*
 * A key setting changed in the preloading postmaster.  A reload assigns
 * its settings one by one (a rotation sets kek_version, then
 * kek_previous_version); refreshing after each would run the command for
 * half-applied configurations and overwrite the old current KEK before the
 * previous slot could take it.  So during a reload the refresh waits until
 * ProcessConfigFile deletes its memory context: then it runs once, for the
 * whole new configuration, still before any backend is signalled.  Outside
 * a reload's context (never expected) it runs at once.
 */
static void
postmaster_config_changed(void)
{
	if (!keyring_ready || IsUnderPostmaster || !process_shared_preload_libraries_done)
		return;
	if (postmaster_refresh_pending)
		return;
	if (CurrentMemoryContext == NULL || CurrentMemoryContext->name == NULL ||
		strcmp(CurrentMemoryContext->name, RELOAD_CONTEXT_NAME) != 0)
	{
		refresh_in_postmaster();
		return;
	}
	postmaster_refresh_callback.func = run_pending_refresh;
	postmaster_refresh_callback.arg = NULL;
	MemoryContextRegisterResetCallback(CurrentMemoryContext,
									   &postmaster_refresh_callback);
	postmaster_refresh_pending = true;
}

static void
config_changed(void)
{
	config_generation++;
	postmaster_config_changed();
}

static bool
strings_differ(const char *a, const char *b)
{
	return strcmp(a ? a : "", b ? b : "") != 0;
}

/*
 * A string setting took a value: keep it in *field and say whether it
 * changed.  Always take the new pointer: guc.c frees the old string, equal
 * or not.
 */
static bool
take_string_setting(const char **field, const char *newval)
{
	bool		changed = strings_differ(*field, newval);

	*field = newval;
	return changed;
}

/*
 * Move a passphrase into secure memory and give guc.c its placeholder in
 * its place.  This may run for validation only (no assignment follows), so
 * it changes nothing but the kept passphrases.  A value that is refused is
 * wiped first: guc.c quotes a refused value in its error message.
 */
static bool
check_passphrase(char **newval, void **extra, GucSource source)
{
	char	   *value = *newval;
	size_t		len;
	uint8_t		tag[SE_IDENTITY_TAG_LEN];
	char	   *placeholder;

	if (value == NULL || value[0] == '\0')
		return true;
	len = strlen(value);
	if (is_placeholder(value))
	{
		/* Only a parallel worker restores its leader's placeholders. */
		if (InitializingParallelWorker)
			return true;
		se_wipe(value, len);
		GUC_check_errdetail("A KEK passphrase must not have the form of a secretenv placeholder.");
		return false;
	}
	if (len > SE_MAX_PASSPHRASE_LEN)
	{
		se_wipe(value, len);
		GUC_check_errdetail("A KEK passphrase may be at most %d bytes long.",
							SE_MAX_PASSPHRASE_LEN);
		return false;
	}
	if (!identity_tag(TAG_PASSPHRASE, value, tag) || !keep_passphrase(tag, value))
	{
		se_wipe(value, len);
		GUC_check_errcode(ERRCODE_INTERNAL_ERROR);
		GUC_check_errdetail("The passphrase could not be moved into secure memory.");
		return false;
	}
	/* guc.c frees setting strings itself: its allocator, not palloc. */
	placeholder = guc_malloc_compat(PLACEHOLDER_LEN + 1);
	if (placeholder == NULL)
	{
		se_wipe(value, len);
		GUC_check_errcode(ERRCODE_OUT_OF_MEMORY);
		return false;
	}
	memcpy(placeholder, PLACEHOLDER_PREFIX, PLACEHOLDER_PREFIX_LEN);
	for (int i = 0; i < SE_IDENTITY_TAG_LEN; i++)
		snprintf(placeholder + PLACEHOLDER_PREFIX_LEN + 2 * i, 3, "%02x", tag[i]);
	se_wipe(value, len);
	guc_free_compat(value);
	*newval = placeholder;
	return true;
}

/* A slot's passphrase setting (its placeholder) took a value. */
static void
assign_slot_passphrase(int slot, const char *newval)
{
	bool		changed = take_string_setting(&config.passphrase[slot], newval);

	forget_unused_passphrases();
	if (changed)
		config_changed();
}

static void
assign_passphrase(const char *newval, void *extra)
{
	assign_slot_passphrase(SLOT_CURRENT, newval);
}

static void
assign_previous_passphrase(const char *newval, void *extra)
{
	assign_slot_passphrase(SLOT_PREVIOUS, newval);
}

/* A slot's version setting took a value. */
static void
assign_slot_version(int slot, int newval)
{
	if (config.version[slot] != newval)
	{
		config.version[slot] = newval;
		config_changed();
	}
}

static void
assign_version(int newval, void *extra)
{
	assign_slot_version(SLOT_CURRENT, newval);
}

static void
assign_previous_version(int newval, void *extra)
{
	assign_slot_version(SLOT_PREVIOUS, newval);
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
	if (take_string_setting(&config.salt, newval))
		config_changed();
}

/*
 * guc.c calls this on every reload of a file that sets the command, changed
 * or not: each reload counts as a change where the command must run again
 * (at once in the preloading postmaster, else on the next use of a KEK), so
 * "fix what the command reads, then reload" takes effect.
 */
static void
assign_passphrase_command(const char *newval, void *extra)
{
	bool		changed = take_string_setting(&config.command, newval);

	if (changed || (command_configured() && command_rerun_needed()))
		config_changed();
}

/* A key command, like the passphrase command, runs again on every reload. */
static void
assign_slot_key_command(int slot, const char *newval)
{
	bool		changed = take_string_setting(&config.key_command[slot], newval);

	if (changed || (key_command_set(slot) && command_rerun_needed()))
		config_changed();
}

static void
assign_key_command(const char *newval, void *extra)
{
	assign_slot_key_command(SLOT_CURRENT, newval);
}

static void
assign_previous_key_command(const char *newval, void *extra)
{
	assign_slot_key_command(SLOT_PREVIOUS, newval);
}

static void
assign_allow_development(bool newval, void *extra)
{
	if (config.allow_development != newval)
	{
		config.allow_development = newval;
		config_changed();
	}
}

/*
 * Whatever the value, SHOW prints a mask: a passphrase is never read back.
 * The show hook of both passphrase settings.
 */
static const char *
show_passphrase(void)
{
	return "********";
}

static void
keyring_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(KeyringShared)));
}

/* In the postmaster, also after a crash restart: start from its count. */
static void
keyring_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	keyring_shared = ShmemInitStruct("secretenv keyring", sizeof(KeyringShared), &found);
	if (!found)
	{
		pg_atomic_init_u64(&keyring_shared->postmaster_changes, seen_postmaster_changes);
		pg_atomic_init_u32(&keyring_shared->postmaster_refreshes, 0);
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * The secure memory of the keyring and the key of the placeholders, once
 * per process that loads the library (inherited by children of a
 * preloading postmaster), before any check hook can need them.
 */
static void
init_secure_keys(void)
{
	SecureKeys *fresh;

	if (secure_keys != NULL)
		return;
	fresh = se_secure_alloc(sizeof(SecureKeys), NULL);
	if (fresh == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not allocate secure memory for key material")));
	if (se_random_bytes(fresh->tag_key, SE_KEY_LEN) != SE_OK)
	{
		se_secure_free(fresh, sizeof(SecureKeys));
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION),
				 errmsg("could not generate random bytes for the passphrase placeholders")));
	}
	secure_keys = fresh;
}

/*
 * Without preload, postgresql.conf's value of a passphrase setting sat in a
 * placeholder GUC that any role could read until this moment: say so.
 * Such a passphrase is then refused (refresh_slot).
 */
static void
warn_if_passphrase_was_visible(const char *name)
{
	const char *visible = GetConfigOption(name, true, false);

	if (!process_shared_preload_libraries_in_progress && visible && visible[0] != '\0')
		ereport(WARNING,
				(errmsg("%s was readable by every role until secretenv was loaded", name),
				 errdetail("The library was loaded on demand rather than through shared_preload_libraries; secretenv refuses to use a passphrase written in the configuration then."),
				 errhint("Add secretenv to shared_preload_libraries and restart the server, or use secretenv.kek_passphrase_command instead.")));
}

void
se_keyring_init(void)
{
	init_secure_keys();
	preloaded = process_shared_preload_libraries_in_progress;

	warn_if_passphrase_was_visible("secretenv.kek_passphrase");
	warn_if_passphrase_was_visible("secretenv.kek_previous_passphrase");

	DefineCustomStringVariable("secretenv.kek_passphrase",
							   "Passphrase from which the current KEK is derived.",
							   "Used only with secretenv in shared_preload_libraries. Empty means not configured.",
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
							   "Used only when secretenv.kek_previous_version is set, and only with secretenv in shared_preload_libraries. Empty means not configured.",
							   &kek_previous_passphrase_guc,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL |
							   GUC_NOT_IN_SAMPLE | GUC_DISALLOW_IN_AUTO_FILE,
							   check_passphrase, assign_previous_passphrase,
							   show_passphrase);

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

	DefineCustomStringVariable("secretenv.kek_key_command",
							   "Command that prints the current KEK itself.",
							   "%v is replaced by the version and %% by a percent sign; the output is one line, the 32-byte KEK as 64 hex digits or base64, used without PBKDF2. "
							   "The version must have no other source.",
							   &kek_key_command_guc,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL |
							   GUC_NOT_IN_SAMPLE | GUC_DISALLOW_IN_AUTO_FILE,
							   NULL, assign_key_command, NULL);

	DefineCustomStringVariable("secretenv.kek_previous_key_command",
							   "Command that prints the KEK of the previous version itself.",
							   "As secretenv.kek_key_command, for secretenv.kek_previous_version; usually the same command line.",
							   &kek_previous_key_command_guc,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL |
							   GUC_NOT_IN_SAMPLE | GUC_DISALLOW_IN_AUTO_FILE,
							   NULL, assign_previous_key_command, NULL);

	DefineCustomBoolVariable("secretenv.allow_development_passphrase",
							 "Use MLflow's built-in development passphrase for a KEK version that has no passphrase or command.",
							 "It is publicly known and protects nothing: for development stores only.",
							 &allow_development_guc,
							 false,
							 PGC_SIGHUP,
							 GUC_SUPERUSER_ONLY,
							 NULL, assign_allow_development, NULL);

	keyring_ready = true;

	if (process_shared_preload_libraries_in_progress)
	{
		prev_shmem_request_hook = shmem_request_hook;
		shmem_request_hook = keyring_shmem_request;
		prev_shmem_startup_hook = shmem_startup_hook;
		shmem_startup_hook = keyring_shmem_startup;
	}

	/* Preloaded: derive now, in the postmaster, for every future backend. */
	if (process_shared_preload_libraries_in_progress)
	{
		KekFailure	failures[NUM_SLOTS];

		published = se_secure_alloc_shared(sizeof(PublishedKeks), NULL);
		if (published == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("could not allocate shared secure memory for key material")));
		pg_atomic_init_u64(&published->sequence, 0);
		refresh_all_slots(failures);
		publish_keks(failures);
		for (int slot = 0; slot < NUM_SLOTS; slot++)
		{
			/* The server starts; each use of the version says why it fails. */
			if (failures[slot] == KEK_NOT_CONFIGURED)
				report_kek_failure(LOG, slot, failures[slot]);
			else if (failures[slot] != KEK_OK)
				report_kek_failure(ERROR, slot, failures[slot]);
		}
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
	const KeptPassphrase *current;

	/* A worker's warnings would repeat its leader's. */
	if (warned_generation == config_generation || IsParallelWorker())
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
				 errdetail("secretenv.kek_passphrase is not set and secretenv.allow_development_passphrase is on, so secrets are encrypted under a publicly known key."),
				 errhint("Set secretenv.kek_passphrase_command (or secretenv.kek_passphrase, with secretenv in shared_preload_libraries) in postgresql.conf, then rotate existing secrets with secretenv.secret_rotate_all().")));
	else if ((current = kept_for_setting(SLOT_CURRENT)) != NULL &&
			 strlen(current->bytes) < SE_MIN_RECOMMENDED_PASSPHRASE_LEN)
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

/* Is a usable KEK source configured for this version? */
bool
se_keyring_has_version(int32 version)
{
	int			slot = slot_for_version(version);

	return slot >= 0 && source_usable(slot_key_source(slot));
}

/*
 * ERROR when a version is the current or previous one but has no usable
 * source (not configured, or a passphrase refused without preload); for
 * callers that would otherwise describe such a version as merely absent.
 */
void
se_keyring_check_source(int32 version)
{
	int			slot = slot_for_version(version);
	KeySource	key_source;

	if (slot < 0)
		return;
	key_source = slot_key_source(slot);
	if (!source_usable(key_source))
		report_kek_failure(ERROR, slot, source_failure(key_source));
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
				 errhint("Set secretenv.kek_previous_version to %d, with secretenv.kek_previous_passphrase (preloaded servers) or a secretenv.kek_passphrase_command that prints its passphrase, and reload.",
						 version)));

	if (slots[slot].generation != config_generation || !slots[slot].derived)
	{
		KekFailure	failures[NUM_SLOTS];

		refresh_all_slots(failures);
		if (failures[slot] != KEK_OK)
			report_kek_failure(ERROR, slot, failures[slot]);
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
	appendStringInfo(&buf, "{\"min_kek_version\": %d, \"kek_fingerprints\": {", se_min_kek_version());
	for (int slot = 0; slot < NUM_SLOTS; slot++)
	{
		const uint8_t *kek;
		uint8_t		fingerprint[SE_KEK_FINGERPRINT_LEN];

		if (config.version[slot] <= 0 ||
			(slot == SLOT_PREVIOUS && config.version[SLOT_PREVIOUS] == config.version[SLOT_CURRENT]))
			continue;
		appendStringInfo(&buf, "%s\"%d\": ", slot == SLOT_CURRENT ? "" : ", ",
						 config.version[slot]);
		/* An HMAC of the KEK: comparable across servers, reveals nothing. */
		kek = se_keyring_kek_if_available(config.version[slot]);
		if (kek == NULL || se_kek_fingerprint(kek, fingerprint) != SE_OK)
		{
			appendStringInfoString(&buf, "null");
			continue;
		}
		appendStringInfoChar(&buf, '"');
		for (int i = 0; i < SE_KEK_FINGERPRINT_LEN; i++)
			appendStringInfo(&buf, "%02x", fingerprint[i]);
		appendStringInfoChar(&buf, '"');
	}
	appendStringInfoString(&buf, "}, ");
	appendStringInfo(&buf, "\"current_version\": %d, \"previous_version\": %s, "
					 "\"using_default_passphrase\": %s, "
					 "\"previous_using_default_passphrase\": %s, "
					 "\"allow_development_passphrase\": %s, "
					 "\"key_source\": \"%s\", \"previous_key_source\": %s, "
					 "\"preloaded\": %s, \"key_memory_locked\": %s, "
					 "\"kek_derivations_in_this_process\": " UINT64_FORMAT "}",
					 config.version[SLOT_CURRENT],
					 config.version[SLOT_PREVIOUS] > 0 ?
					 psprintf("%d", config.version[SLOT_PREVIOUS]) : "null",
					 slot_uses_default(SLOT_CURRENT) ? "true" : "false",
					 config.version[SLOT_PREVIOUS] > 0 ?
					 (slot_uses_default(SLOT_PREVIOUS) ? "true" : "false") : "null",
					 config.allow_development ? "true" : "false",
					 key_source_names[slot_key_source(SLOT_CURRENT)],
					 config.version[SLOT_PREVIOUS] > 0 ?
					 psprintf("\"%s\"", key_source_names[slot_key_source(SLOT_PREVIOUS)]) : "null",
					 preloaded ? "true" : "false",
					 se_secure_memory_locked() ? "true" : "false",
					 derivations_pid == MyProcPid ? derivations : 0);
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}
