/*-------------------------------------------------------------------------
 *
 * audit_mac.c
 *	  The audit key and the MACs that chain audit records.
 *
 * The audit key of a KEK version is HMAC-SHA256(KEK, "secretenv audit
 * key"): derived on demand, never stored, and useless for anything but
 * the audit chain (an HMAC output reveals nothing of its key, so holding
 * an audit key does not open a wrapped DEK).  A record's MAC is
 * HMAC-SHA256(audit key, previous record's MAC || the record's canonical
 * encoding); the first record of a chain has an empty previous MAC.
 *
 *-------------------------------------------------------------------------
 */
#include <string.h>

#include "crypto/se_crypto.h"
#include "crypto/se_crypto_internal.h"

#define AUDIT_KEY_LABEL "secretenv audit key"

se_status
se_audit_key(const uint8_t kek[SE_KEY_LEN], uint8_t out[SE_KEY_LEN])
{
	return se_hmac_sha256_truncated(kek, (const uint8_t *) AUDIT_KEY_LABEL,
									strlen(AUDIT_KEY_LABEL), NULL, 0,
									out, SE_KEY_LEN);
}

se_status
se_audit_mac(const uint8_t audit_key[SE_KEY_LEN],
			 const uint8_t *prev_mac, size_t prevlen,
			 const uint8_t *record, size_t recordlen,
			 uint8_t out[SE_AUDIT_MAC_LEN])
{
	if (prevlen != 0 && prevlen != SE_AUDIT_MAC_LEN)
		return SE_ERR_LENGTH;
	return se_hmac_sha256_truncated(audit_key, prev_mac, prevlen,
									record, recordlen,
									out, SE_AUDIT_MAC_LEN);
}
