/*-------------------------------------------------------------------------
 *
 * plaintext_wipe.h
 *	  Wipe plaintext copies when their memory context is reset.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRETENV_PLAINTEXT_WIPE_H
#define SECRETENV_PLAINTEXT_WIPE_H

#include "fmgr.h"

/* plaintext_wipe.c */
extern void se_wipe_at_reset(void *ptr, size_t len);
extern text *se_text_arg_scrubbed(FunctionCallInfo fcinfo, int argno);

#endif							/* SECRETENV_PLAINTEXT_WIPE_H */
