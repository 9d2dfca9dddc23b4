/*-------------------------------------------------------------------------
 *
 * test_bytes.h
 *	  Checks on byte buffers shared by the unit tests (test_crypto.c) and
 *	  the fuzz harness (../fuzz/fuzz_envelope.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef TEST_BYTES_H
#define TEST_BYTES_H

#include <stddef.h>
#include <stdint.h>

/* Whether all len bytes at p are zero: how a wiped output looks. */
extern int	test_all_zero(const uint8_t *p, size_t len);

#endif							/* TEST_BYTES_H */
