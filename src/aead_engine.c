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

#include "aead_engine.h"
#include "se_crypto.h"
#include "se_messages.h"

static se_aead *engine = NULL;

static void
free_engine(int code, Datum arg)
{
	se_aead_free(engine);
	engine = NULL;
}

/* Create the engine in the postmaster, for backends to inherit. */
void
se_engine_init(void)
{
	if (process_shared_preload_libraries_in_progress)
		(void) se_engine();
}

se_aead *
se_engine(void)
{
	if (engine == NULL)
	{
		engine = se_aead_new();
		if (engine == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("could not create an AES-256-GCM context")));
		on_proc_exit(free_engine, (Datum) 0);
	}
	return engine;
}
