/*-------------------------------------------------------------------------
 *
 * passphrase_command.h
 *	  Running the KEK commands: secretenv.kek_passphrase_command and the
 *	  key commands (secretenv.kek_key_command, kek_previous_key_command).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PASSPHRASE_COMMAND_H
#define PASSPHRASE_COMMAND_H

#include "crypto/se_crypto.h"

/* Room for any reason se_passphrase_command_run gives. */
#define SE_PASSPHRASE_REASON_LEN 256

typedef enum se_passphrase_result
{
	SE_PASSPHRASE_OK = 0,
	SE_PASSPHRASE_FAILED,		/* could not be run, or did not exit with 0 */
	SE_PASSPHRASE_BAD_OUTPUT,	/* no line, empty, too long, a NUL byte; for a
								 * key command also more than one line or not
								 * a 32-byte key */
	SE_PASSPHRASE_TIMED_OUT,	/* outlived the timeout and was killed */
	SE_PASSPHRASE_INTERRUPTED	/* killed on a cancel or termination request */
} se_passphrase_result;

/* Longest first line a key command may print (64 hex digits fit). */
#define SE_KEY_LINE_MAX 128

extern void se_passphrase_command_init(void);
extern se_passphrase_result se_passphrase_command_run(const char *command,
													  int32 version,
													  char *buf, size_t bufsize,
													  char *reason,
													  size_t reasonsize);
extern se_passphrase_result se_key_command_run(const char *command,
											   int32 version,
											   char *buf, size_t bufsize,
											   uint8_t key[SE_KEY_LEN],
											   char *reason,
											   size_t reasonsize);

#endif							/* PASSPHRASE_COMMAND_H */
