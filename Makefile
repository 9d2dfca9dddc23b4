# secretenv: envelope-encrypted secrets for PostgreSQL (PGXS build)

EXTENSION = secretenv
MODULE_big = secretenv


# The cryptographic core (no PostgreSQL headers), then the PostgreSQL layer,
# area by area (docs/layout.md), then the module's entry point.
CRYPTO_OBJS = \
	src/crypto/aead.o \
	src/crypto/audit_mac.o \
	src/crypto/envelope.o \
	src/crypto/fingerprint.o \
	src/crypto/hex.o \
	src/crypto/kdf.o \
	src/crypto/mask.o \
	src/crypto/random.o \
	src/crypto/wipe.o
OBJS = \
	$(CRYPTO_OBJS) \
	src/keys/aead_engine.o \
	src/keys/crypto_errors.o \
	src/keys/kek_retirement.o \
	src/keys/key_freshness.o \
	src/keys/key_health.o \
	src/keys/key_health_worker.o \
	src/keys/key_status_sql.o \
	src/keys/keyring.o \
	src/keys/keys_init.o \
	src/keys/passphrase_command.o \
	src/cache/cache.o \
	src/cache/cache_init.o \
	src/cache/coherence.o \
	src/cache/writer_counters.o \
	src/secrets/access_rules.o \
	src/secrets/drop_guard.o \
	src/secrets/encryption_time.o \
	src/secrets/envelope_memo.o \
	src/secrets/envelope_sql.o \
	src/secrets/mask_sql.o \
	src/secrets/plaintext_wipe.o \
	src/secrets/reencrypt.o \
	src/secrets/secret_get.o \
	src/secrets/secrets_init.o \
	src/secrets/trigger.o \
	src/secrets/verify.o \
	src/redaction/redact.o \
	src/redaction/redact_catalog.o \
	src/redaction/redact_log.o \
	src/redaction/redact_scrub.o \
	src/redaction/redact_stats.o \
	src/redaction/redaction_init.o \
	src/audit/audit_chain.o \
	src/audit/audit_init.o \
	src/audit/audit_queue.o \
	src/audit/audit_record.o \
	src/audit/audit_sql.o \
	src/audit/audit_stored_ids.o \
	src/audit/audit_worker.o \
	src/versions/version_audit.o \
	src/versions/version_get.o \
	src/versions/version_settings.o \
	src/versions/versions_init.o \
	src/secretenv.o

# Every released version's full script and the upgrade scripts between them.
DATA = sql/secretenv--1.0.sql sql/secretenv--1.1.sql sql/secretenv--1.2.sql \
	sql/secretenv--1.0--1.1.sql sql/secretenv--1.1--1.2.sql
PG_CPPFLAGS = -I$(srcdir)/src
SHLIB_LINK = -lcrypto

# `make installcheck` follows the PGXS convention: pg_regress runs against the
# server at PGHOST/PGPORT, which must preload secretenv with the keys of
# test/regress.conf (the rotation and error tests need both KEK versions).
# REGRESS_TEMP_INSTANCE=1 makes pg_regress bring its own preloaded cluster
# instead, as test/run_all.sh does.  The database it creates is UTF8 either way.
REGRESS = setup primitives errors mask trigger store rotation privileges cache guard
REGRESS_OPTS = --encoding=UTF8 --no-locale
ifdef REGRESS_TEMP_INSTANCE
REGRESS_OPTS += --temp-instance=tmp_regress --temp-config=$(srcdir)/test/regress.conf
endif

# The isolation specs and the TAP tests always bring their own clusters.
ISOLATION = cache_invalidation cache_races rotation_concurrency concurrent_writes version_promote
ISOLATION_OPTS = --inputdir=$(srcdir)/test --temp-instance=tmp_isolation \
	--temp-config=$(srcdir)/test/regress.conf --encoding=UTF8 --no-locale

TAP_TESTS = 1
PROVE_TESTS = test/t/*.pl

EXTRA_CLEAN = tmp_regress tmp_isolation output_iso results regression.diffs regression.out

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# pg_buildext builds out of the source tree (VPATH=<source> in build-<version>/),
# where the compiler needs the object directories to exist.
ifdef VPATH
$(shell mkdir -p $(sort $(dir $(OBJS))))
endif

# PGXS does not track header dependencies.
$(OBJS): $(wildcard $(srcdir)/src/*.h) $(wildcard $(srcdir)/src/*/*.h)
