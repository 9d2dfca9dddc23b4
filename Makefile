# secretenv: envelope-encrypted secrets for PostgreSQL (PGXS build)

EXTENSION = secretenv
MODULE_big = secretenv


# The cryptographic core (no PostgreSQL headers), then the PostgreSQL layer.
CRYPTO_OBJS = \
	src/crypto/aead.o \
	src/crypto/envelope.o \
	src/crypto/kdf.o \
	src/crypto/mask.o \
	src/crypto/random.o \
	src/crypto/wipe.o
OBJS = \
	$(CRYPTO_OBJS) \
	src/cache.o \
	src/coherence.o \
	src/engine.o \
	src/envelope_sql.o \
	src/errors.o \
	src/health.o \
	src/keyring.o \
	src/mask_sql.o \
	src/redact.o \
	src/scrub.o \
	src/shared.o \
	src/secret_get.o \
	src/secretenv.o \
	src/trigger.o \
	src/verify.o \
	src/writers.o

# Every released version's full script and the upgrade scripts between them.
DATA = sql/secretenv--1.0.sql sql/secretenv--1.1.sql sql/secretenv--1.0--1.1.sql
PG_CPPFLAGS = -I$(srcdir)/src -I$(srcdir)/src/crypto
SHLIB_LINK = -lcrypto

# pg_regress brings its own cluster, preloaded and UTF8 (see test/regress.conf).
REGRESS = setup primitives errors mask trigger store rotation privileges cache
REGRESS_OPTS = --temp-instance=tmp_regress --temp-config=$(srcdir)/test/regress.conf \
	--encoding=UTF8 --no-locale

ISOLATION = cache_invalidation cache_races rotation_concurrency concurrent_writes
ISOLATION_OPTS = --inputdir=$(srcdir)/test --temp-instance=tmp_isolation \
	--temp-config=$(srcdir)/test/regress.conf --encoding=UTF8 --no-locale

TAP_TESTS = 1
PROVE_TESTS = test/t/*.pl

EXTRA_CLEAN = tmp_regress tmp_isolation output_iso results regression.diffs regression.out

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS does not track header dependencies.
$(OBJS): src/secretenv.h src/shared.h src/cache.h src/coherence.h src/crypto/se_crypto.h src/crypto/se_crypto_internal.h
