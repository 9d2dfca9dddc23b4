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

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "se_crypto.h"

#define FINGERPRINT_LABEL "secretenv kek fingerprint"

se_status
se_kek_fingerprint(const uint8_t kek[SE_KEY_LEN], uint8_t out[SE_KEK_FINGERPRINT_LEN])
{
	uint8_t		mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;

	if (HMAC(EVP_sha256(), kek, SE_KEY_LEN,
			 (const unsigned char *) FINGERPRINT_LABEL, strlen(FINGERPRINT_LABEL),
			 mac, &maclen) == NULL || maclen < SE_KEK_FINGERPRINT_LEN)
	{
		ERR_clear_error();
		se_wipe(mac, sizeof(mac));
		return SE_ERR_OPENSSL;
	}
	memcpy(out, mac, SE_KEK_FINGERPRINT_LEN);
	se_wipe(mac, sizeof(mac));
	return SE_OK;
}
