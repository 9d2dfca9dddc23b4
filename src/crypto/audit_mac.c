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
 * A run of records MACed under one KEK (the audit writer's batch) keys
 * HMAC once: fetching HMAC and keying it took longer than the MAC of a
 * record, and that time was the writer's, taken from the readers on a
 * busy server.  EVP_MAC_init without a key restarts the keyed context.
 *
 *-------------------------------------------------------------------------
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>

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

struct se_audit_mac_run
{
	EVP_MAC    *mac;
	EVP_MAC_CTX *ctx;
};

se_status
se_audit_mac_run_begin(const uint8_t kek[SE_KEY_LEN], se_audit_mac_run **out)
{
	se_audit_mac_run *run;
	uint8_t		key[SE_KEY_LEN];
	OSSL_PARAM	params[2];
	se_status	st;
	int			ok;

	*out = NULL;
	run = calloc(1, sizeof(*run));
	if (run == NULL)
		return SE_ERR_OPENSSL;
	st = se_audit_key(kek, key);
	if (st != SE_OK)
	{
		se_wipe(key, sizeof(key));
		free(run);
		return st;
	}
	ERR_clear_error();
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
												 (char *) "SHA256", 0);
	params[1] = OSSL_PARAM_construct_end();
	run->mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	if (run->mac != NULL)
		run->ctx = EVP_MAC_CTX_new(run->mac);
	ok = run->ctx != NULL && EVP_MAC_init(run->ctx, key, SE_KEY_LEN, params) == 1;
	se_wipe(key, sizeof(key));
	if (!ok)
	{
		ERR_clear_error();
		se_audit_mac_run_end(run);
		return SE_ERR_OPENSSL;
	}
	*out = run;
	return SE_OK;
}

se_status
se_audit_mac_run_next(se_audit_mac_run *run,
					  const uint8_t *prev_mac, size_t prevlen,
					  const uint8_t *record, size_t recordlen,
					  uint8_t out[SE_AUDIT_MAC_LEN])
{
	size_t		outlen = 0;

	if (prevlen != 0 && prevlen != SE_AUDIT_MAC_LEN)
		return SE_ERR_LENGTH;
	if (EVP_MAC_init(run->ctx, NULL, 0, NULL) != 1 ||
		(prevlen != 0 && EVP_MAC_update(run->ctx, prev_mac, prevlen) != 1) ||
		(recordlen != 0 && EVP_MAC_update(run->ctx, record, recordlen) != 1) ||
		EVP_MAC_final(run->ctx, out, &outlen, SE_AUDIT_MAC_LEN) != 1 ||
		outlen != SE_AUDIT_MAC_LEN)
	{
		ERR_clear_error();
		se_wipe(out, SE_AUDIT_MAC_LEN);
		return SE_ERR_OPENSSL;
	}
	return SE_OK;
}

void
se_audit_mac_run_end(se_audit_mac_run *run)
{
	if (run == NULL)
		return;
	/* EVP_MAC_CTX_free cleanses the keyed state. */
	EVP_MAC_CTX_free(run->ctx);
	EVP_MAC_free(run->mac);
	free(run);
}
