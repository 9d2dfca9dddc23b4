/*-------------------------------------------------------------------------
 *
 * aead_engine.h
 *	  The process's reusable AES-256-GCM engine.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRETENV_AEAD_ENGINE_H
#define SECRETENV_AEAD_ENGINE_H

#include "crypto/se_crypto.h"

/* aead_engine.c: created in the postmaster when preloaded, else on first use */
extern void se_engine_init(void);
extern se_aead *se_engine(void);

#endif							/* SECRETENV_AEAD_ENGINE_H */
