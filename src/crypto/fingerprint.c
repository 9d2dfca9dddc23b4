/*-------------------------------------------------------------------------
 *
 * fingerprint.c
 *	  Fingerprints of KEKs.
 *
 * A fingerprint names a KEK without revealing it: HMAC-SHA256 keyed by the
 * KEK over a fixed label, truncated to 8 bytes.  An HMAC output says
 * nothing about its key, so fingerprints may be shown to operators (to
 * compare two servers' key configurations before a migration) and kept in
 * shared memory (to tell which KEK a key health result was computed with).
 *
 *-------------------------------------------------------------------------
 */
#include <string.h>

#include "crypto/se_crypto.h"
#include "crypto/se_crypto_internal.h"

#define FINGERPRINT_LABEL "secretenv kek fingerprint"

se_status
se_kek_fingerprint(const uint8_t kek[SE_KEY_LEN], uint8_t out[SE_KEK_FINGERPRINT_LEN])
{
	return se_hmac_sha256_truncated(kek, (const uint8_t *) FINGERPRINT_LABEL,
									strlen(FINGERPRINT_LABEL), NULL, 0,
									out, SE_KEK_FINGERPRINT_LEN);
}
