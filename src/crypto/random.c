/*-------------------------------------------------------------------------
 *
 * random.c
 *	  Random bytes for DEKs, nonces and cache bucket keys.
 *
 * Every byte comes from OpenSSL's CSPRNG (RAND_bytes).  One encrypt needs
 * three draws (a DEK and two nonces), and in OpenSSL 3 each RAND_bytes call
 * costs far more than the bytes themselves (a DRBG re-key, a fork check),
 * so small requests are served from a per-process pool refilled 4 KB at a
 * time.
 *
 * Security notes:
 *	- The pool holds future DEKs and nonces, so it lives in secure memory
 *	  (locked, excluded from core dumps) and every byte is wiped as it is
 *	  handed out: nothing served stays behind, nothing stays behind served.
 *	- A forked child must never reuse its parent's pool (two processes
 *	  handing out the same nonces under the same key would be fatal for
 *	  GCM): a pthread_atfork child handler wipes and empties the child's
 *	  copy, at no cost per call (a getpid() per draw would be a system
 *	  call).
 *	- Not thread-safe, like the rest of the core; PostgreSQL backends are
 *	  single-threaded.
 *
 *-------------------------------------------------------------------------
 */
#include <limits.h>
#include <pthread.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/rand.h>

#include "crypto/se_crypto.h"

#define POOL_LEN 4096
#define POOL_MAX_REQUEST 256	/* larger requests go straight to OpenSSL */

typedef struct RandomPool
{
	size_t		used;			/* bytes[0 .. used) are handed out and wiped */
	uint8_t		bytes[POOL_LEN];
} RandomPool;

static RandomPool *pool = NULL;

/* In a forked child: forget the parent's bytes before anything can use them. */
static void
empty_pool_in_child(void)
{
	if (pool != NULL)
	{
		se_wipe(pool->bytes, POOL_LEN);
		pool->used = POOL_LEN;
	}
}

/* Straight from OpenSSL, for large requests or without a pool. */
static se_status
draw(uint8_t *buf, size_t len)
{
	size_t		done = 0;

	/* RAND_bytes takes an int length; larger requests go in pieces. */
	while (done < len)
	{
		size_t		chunk = len - done;

		if (chunk > INT_MAX)
			chunk = INT_MAX;
		if (RAND_bytes(buf + done, (int) chunk) != 1)
		{
			ERR_clear_error();
			se_wipe(buf, len);
			return SE_ERR_RANDOM;
		}
		done += chunk;
	}
	return SE_OK;
}

se_status
se_random_bytes(uint8_t *buf, size_t len)
{
	if (len > POOL_MAX_REQUEST)
		return draw(buf, len);
	if (pool == NULL)
	{
		RandomPool *fresh;

		fresh = se_secure_alloc(sizeof(RandomPool), NULL);
		if (fresh == NULL)
			return draw(buf, len);
		if (pthread_atfork(NULL, NULL, empty_pool_in_child) != 0)
		{
			se_secure_free(fresh, sizeof(RandomPool));
			return draw(buf, len);
		}
		fresh->used = POOL_LEN;
		pool = fresh;
	}

	if (pool->used + len > POOL_LEN)
	{
		se_status	status = draw(pool->bytes, POOL_LEN);

		if (status != SE_OK)
		{
			pool->used = POOL_LEN;
			se_wipe(buf, len);
			return status;
		}
		pool->used = 0;
	}

	memcpy(buf, pool->bytes + pool->used, len);
	se_wipe(pool->bytes + pool->used, len);
	pool->used += len;
	return SE_OK;
}
