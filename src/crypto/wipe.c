/*-------------------------------------------------------------------------
 *
 * wipe.c
 *	  Wiping of sensitive memory, and secure memory for long-lived keys.
 *
 * A plain memset before free is dead code to an optimising compiler and is
 * routinely removed; OPENSSL_cleanse is written so that it is not.
 *
 * Long-lived key material (the KEKs derived at startup, the passphrases
 * they come from, the cache's bucket keys, the random pool) lives in pages
 * of its own, obtained with mmap rather than malloc so that:
 *	- mlock can keep them out of swap without locking unrelated heap data,
 *	  and munlock on free cannot unlock a neighbour's page;
 *	- MADV_DONTDUMP (Linux; MADV_NOCORE on the BSDs) keeps them out of core
 *	  files, which are often readable by more people than the server;
 *	- the pages go back to the kernel on free, after a wipe, instead of being
 *	  recycled by malloc for some other allocation.
 * mlock may fail (RLIMIT_MEMLOCK, containers); that is reported to the
 * caller, not treated as an error, since the keys are still usable.
 *
 * Fork.  A forked child inherits the mappings and their MADV_DONTDUMP
 * advice (the kernel copies a mapping's flags, VM_DONTDUMP included), but
 * not their memory locks: POSIX and Linux both say locks are not inherited
 * across fork.  PostgreSQL forks every backend from the postmaster, which
 * holds the KEKs it derived at start, so every secure allocation is kept in
 * a registry and a pthread_atfork child handler locks them all again in the
 * child.  Whether every secure page is locked is then known per process
 * (se_secure_memory_locked), which is what a report of "key memory locked"
 * must mean: the parent's mlock result says nothing about a child.
 *
 *-------------------------------------------------------------------------
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "crypto/se_crypto.h"

/*
 * One live secure allocation.  The registry holds addresses and lengths
 * only, never contents, so it lives in ordinary memory.  Not thread-safe,
 * like the rest of the core.
 */
typedef struct SecureRegion
{
	struct SecureRegion *next;
	void	   *ptr;
	size_t		maplen;
	int			locked;			/* mlock succeeded in this process */
} SecureRegion;

static SecureRegion *regions = NULL;
static int	atfork_registered = 0;

void
se_wipe(void *ptr, size_t len)
{
	if (ptr != NULL && len > 0)
		OPENSSL_cleanse(ptr, len);
}

/* len rounded up to whole pages, or 0 when that is impossible. */
static size_t
secure_mapping_len(size_t len)
{
	long		page = sysconf(_SC_PAGESIZE);
	size_t		pagesz;

	if (page <= 0 || len == 0)
		return 0;
	pagesz = (size_t) page;
	if (len > SIZE_MAX - (pagesz - 1))
		return 0;
	return (len + pagesz - 1) / pagesz * pagesz;
}

/*
 * In a forked child: the locks of the parent are gone, take them again.
 * Called by fork() in the child before it returns; mlock is
 * async-signal-safe in practice (a plain system call) and allocates
 * nothing.
 */
static void
relock_in_child(void)
{
	for (SecureRegion *r = regions; r != NULL; r = r->next)
		r->locked = mlock(r->ptr, r->maplen) == 0;
}

/* se_secure_alloc, with the mmap sharing flag given. */
static void *
secure_alloc(size_t len, int *locked, int share)
{
	size_t		maplen = secure_mapping_len(len);
	SecureRegion *region;
	void	   *ptr;

	if (locked != NULL)
		*locked = 0;
	if (maplen == 0)
		return NULL;

	/*
	 * Register the child handler before the first allocation, so that no
	 * secure page can exist without it.  Failing that, refuse: a caller
	 * could not know that its pages are unlocked in children.
	 */
	if (!atfork_registered)
	{
		if (pthread_atfork(NULL, NULL, relock_in_child) != 0)
			return NULL;
		atfork_registered = 1;
	}
	region = malloc(sizeof(SecureRegion));
	if (region == NULL)
		return NULL;

	/* Anonymous mappings are zero-filled by the kernel. */
	ptr = mmap(NULL, maplen, PROT_READ | PROT_WRITE,
			   share | MAP_ANONYMOUS, -1, 0);
	if (ptr == MAP_FAILED)
	{
		free(region);
		return NULL;
	}

	/*
	 * Exclusion from core dumps is best effort, like mlock: an old kernel
	 * without it still gets usable memory.
	 */
#if defined(MADV_DONTDUMP)
	(void) madvise(ptr, maplen, MADV_DONTDUMP);
#elif defined(MADV_NOCORE)
	(void) madvise(ptr, maplen, MADV_NOCORE);
#endif

	region->ptr = ptr;
	region->maplen = maplen;
	region->locked = mlock(ptr, maplen) == 0;
	region->next = regions;
	regions = region;
	if (locked != NULL)
		*locked = region->locked;
	return ptr;
}

void *
se_secure_alloc(size_t len, int *locked)
{
	return secure_alloc(len, locked, MAP_PRIVATE);
}

/*
 * As se_secure_alloc, but shared with the processes forked afterwards
 * (MAP_SHARED): what one of them writes, all of them read.  The mapping
 * has no name and no file; a process that execs loses it.
 */
void *
se_secure_alloc_shared(size_t len, int *locked)
{
	return secure_alloc(len, locked, MAP_SHARED);
}

void
se_secure_free(void *ptr, size_t len)
{
	size_t		maplen = secure_mapping_len(len);
	SecureRegion **link;

	if (ptr == NULL || maplen == 0)
		return;
	/* Wipe the whole mapping, not just len: callers may have used slack. */
	se_wipe(ptr, maplen);
	/* Fails harmlessly when the pages were never locked. */
	(void) munlock(ptr, maplen);
	(void) munmap(ptr, maplen);

	for (link = &regions; *link != NULL; link = &(*link)->next)
	{
		if ((*link)->ptr == ptr)
		{
			SecureRegion *gone = *link;

			*link = gone->next;
			free(gone);
			break;
		}
	}
}

int
se_secure_memory_locked(void)
{
	for (SecureRegion *r = regions; r != NULL; r = r->next)
		if (!r->locked)
			return 0;
	return 1;
}
