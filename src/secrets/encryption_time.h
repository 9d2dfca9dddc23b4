/*-------------------------------------------------------------------------
 *
 * encryption_time.h
 *	  When a stored value was last encrypted (value_encrypted_at).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRETENV_ENCRYPTION_TIME_H
#define SECRETENV_ENCRYPTION_TIME_H

#include <stdint.h>

/* encryption_time.c: note an envelope sealed under a fresh DEK (its wrapped DEK) */
extern void se_note_fresh_envelope(const uint8_t *wrapped);

#endif							/* SECRETENV_ENCRYPTION_TIME_H */
