/*-------------------------------------------------------------------------
 *
 * keyring.h
 *	  KEK configuration, derivation and lookup.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRETENV_KEYRING_H
#define SECRETENV_KEYRING_H

/* keyring.c */
extern void se_keyring_init(void);
extern int32 se_keyring_current_version(void);
extern int32 se_keyring_previous_version(void);
extern bool se_keyring_has_version(int32 version);
extern void se_keyring_check_source(int32 version);
extern const uint8_t *se_keyring_kek(int32 version);
extern bool se_keyring_using_default(int32 version);
extern uint64 se_keyring_generation(void);
extern const uint8_t *se_keyring_kek_if_available(int32 version);
extern uint32 se_keyring_postmaster_refreshes(void);

#endif							/* SECRETENV_KEYRING_H */
