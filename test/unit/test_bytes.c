/*-------------------------------------------------------------------------
 *
 * test_bytes.c
 *	  Checks on byte buffers shared by the unit tests and the fuzz harness.
 *
 *-------------------------------------------------------------------------
 */
#include "test_bytes.h"

int
test_all_zero(const uint8_t *p, size_t len)
{
	size_t		i;

	for (i = 0; i < len; i++)
		if (p[i] != 0)
			return 0;
	return 1;
}
