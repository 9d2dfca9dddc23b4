/*-------------------------------------------------------------------------
 *
 * wipe.c
 *	  Wiping of sensitive memory, and secure memory for long-lived keys.
 *
 * A plain memset before free is dead code to an optimising compiler and is
 * routinely removed; OPENSSL_cleanse is written so that it is not.
 *
 * Long-lived key material (the KEKs derived at startup, the cache's bucket
 * keys) lives in pages of its own, obtained with mmap rather than malloc so
 * that:
 *	- mlock can keep them out of swap without locking unrelated heap data,
 *	  and munlock on free cannot unlock a neighbour's page;
 *	- MADV_DONTDUMP (Linux; MADV_NOCORE on the BSDs) keeps them out of core
 *	  files, which are often readable by more people than the server;
 *	- the pages go back to the kernel on free, after a wipe, instead of being
 *	  recycled by malloc for some other allocation.
 * mlock may fail (RLIMIT_MEMLOCK, containers); that is reported to the
 * caller, not treated as an error, since the keys are still usable.
 *
 *-------------------------------------------------------------------------
 */
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "se_crypto.h"

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

void *
se_secure_alloc(size_t len, int *locked)
{
	size_t		maplen = secure_mapping_len(len);
	void	   *ptr;

	if (locked != NULL)
		*locked = 0;
	if (maplen == 0)
		return NULL;

	/* Anonymous mappings are zero-filled by the kernel. */
	ptr = mmap(NULL, maplen, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (ptr == MAP_FAILED)
		return NULL;

	/*
	 * Exclusion from core dumps is best effort, like mlock: an old kernel
	 * without it still gets usable memory.
	 */
#if defined(MADV_DONTDUMP)
	(void) madvise(ptr, maplen, MADV_DONTDUMP);
#elif defined(MADV_NOCORE)
	(void) madvise(ptr, maplen, MADV_NOCORE);
#endif

	if (mlock(ptr, maplen) == 0 && locked != NULL)
		*locked = 1;
	return ptr;
}

void
se_secure_free(void *ptr, size_t len)
{
	size_t		maplen = secure_mapping_len(len);

	if (ptr == NULL || maplen == 0)
		return;
	/* Wipe the whole mapping, not just len: callers may have used slack. */
	se_wipe(ptr, maplen);
	/* Fails harmlessly when the pages were never locked. */
	(void) munlock(ptr, maplen);
	(void) munmap(ptr, maplen);
}
