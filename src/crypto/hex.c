/*-------------------------------------------------------------------------
 *
 * hex.c
 *	  Hexadecimal digits, the one parser that a key command's output, the
 *	  audit's recognition of stored ids and the unit tests share.
 *
 *-------------------------------------------------------------------------
 */
#include "crypto/se_crypto.h"

int
se_hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}
