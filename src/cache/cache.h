/*-------------------------------------------------------------------------
 *
 * cache.h
 *	  The sealed per-backend credential store behind secret_get().
 *
 * A store of (user id, name) -> plaintext, sealed under random time-bucket
 * keys, bounded in size and age.  It knows nothing of secretenv.secrets nor
 * of when a value may be kept or must be dropped: that is coherence.c's
 * business (it calls se_cache_invalidate), and secret_get.c asks it before
 * every lookup and insert.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRETENV_CACHE_H
#define SECRETENV_CACHE_H

#define SE_CACHE_MAX_NAME_LEN 127	/* longer names are served uncached */
#define SE_CACHE_ID_LEN 16			/* the uuid stored beside each value */

extern void se_cache_init(void);
extern bool se_cache_enabled(void);

/*
 * Lookup and insert never raise an ERROR once the store exists: an
 * operation either completes or leaves the store as it was (see cache.c).
 */
extern text *se_cache_lookup(Oid userid, const char *name, int namelen,
							 uint8 *secret_id, int32 *version);
extern void se_cache_insert(Oid userid, const char *name, int namelen,
							const uint8 *secret_id, int32 version,
							const char *pt, size_t ptlen);

/* Drop every entry; the second form counts it as an invalidation. */
extern void se_cache_clear_all(void);
extern void se_cache_invalidate(void);

#endif							/* SECRETENV_CACHE_H */
