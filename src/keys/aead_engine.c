/*-------------------------------------------------------------------------
 *
 * aead_engine.c
 *	  The backend's reusable AES-256-GCM engine.
 *
 * Creating an OpenSSL cipher context per call would allocate and free on
 * every decrypt; one engine per process is created on first use and freed
 * (which cleanses its key schedule) at process exit.  When preloaded, the
 * postmaster creates it once and every backend inherits it with the
 * cipher already fetched: a new connection's first decrypt skips that.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/ipc.h"

#include "crypto/se_crypto.h"
#include "keys/aead_engine.h"
#include "se_messages.h"

static se_aead *engine = NULL;

static void
free_engine(int code, Datum arg)
{
	se_aead_free(engine);
	engine = NULL;
}

/*
 * Create the engine in the postmaster, for backends to inherit.  A failure
 * here does not stop the server: each backend tries again on first use and
 * reports it there (se_engine), where a client sees it.
 */
void
se_engine_init(void)
{
	if (process_shared_preload_libraries_in_progress && engine == NULL)
	{
		if (se_aead_new(&engine) == SE_OK)
			on_proc_exit(free_engine, (Datum) 0);
		else
			ereport(WARNING,
					(errmsg("secretenv could not create its AES-256-GCM context at server start"),
					 errdetail("Every operation that encrypts or decrypts will fail until this is fixed.")));
	}
}

se_aead *
se_engine(void)
{
	if (engine == NULL)
	{
		se_status	status = se_aead_new(&engine);

		if (status == SE_ERR_UNAVAILABLE)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("could not initialize encryption: no OpenSSL provider implements AES-256-GCM"),
					 errdetail("No OpenSSL provider loaded by this server implements AES-256-GCM under the configured properties."),
					 errhint("Check the OpenSSL configuration of the server (OPENSSL_CONF, its providers and default_properties): "
							 "the default or the FIPS provider must be loaded and active. Then restart the server.")));
		if (status == SE_ERR_NOMEM)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("could not initialize encryption: out of memory in the cryptographic library")));
		if (status != SE_OK)
			ereport(ERROR,
					(errcode(ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION),
					 errmsg("could not initialize encryption: cryptographic library failure"),
					 errdetail_internal("%s", se_status_string(status))));
		on_proc_exit(free_engine, (Datum) 0);
	}
	return engine;
}
