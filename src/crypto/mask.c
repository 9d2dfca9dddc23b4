/*-------------------------------------------------------------------------
 *
 * mask.c
 *	  Display masks of secret values.
 *
 * A mask ("sk-...a5Hb") lets an administrator recognise a secret without
 * seeing it: the first 3 and the last 4 code points, or "***" below 8 code
 * points, where showing 7 of them would give away nearly all of it.
 *
 * Code points are counted as bytes that are not UTF-8 continuation bytes
 * (0x80..0xBF), so a multibyte character is never cut in half, and the
 * same rule gives a well-defined, in-bounds answer on any byte string:
 * leading continuation bytes simply join the first code point.  For valid
 * UTF-8 this is exactly MLflow's Python s[:3] + "..." + s[-4:].
 *
 *-------------------------------------------------------------------------
 */
#include <stdint.h>
#include <string.h>

#include "crypto/se_crypto.h"

#define SE_MASK_HEAD		3	/* code points shown at the start */
#define SE_MASK_TAIL		4	/* code points shown at the end */
#define SE_MASK_MIN			8	/* fewer code points give SE_MASK_HIDDEN */
#define SE_MASK_HIDDEN		"***"
#define SE_MASK_ELLIPSIS	"..."

static inline int
is_continuation(unsigned char c)
{
	return (c & 0xC0) == 0x80;
}

size_t
se_mask_bound(size_t len)
{
	/*
	 * Head and tail never overlap, so a mask is at most the input plus the
	 * ellipsis; "***" has the same length as "...".
	 */
	if (len > SIZE_MAX - (sizeof(SE_MASK_ELLIPSIS) - 1))
		return SIZE_MAX;
	return len + sizeof(SE_MASK_ELLIPSIS) - 1;
}

size_t
se_mask_utf8(const char *s, size_t len, char *out)
{
	const unsigned char *u = (const unsigned char *) s;
	size_t		ncp = 0;
	size_t		head_end = 0;
	size_t		tail_start = len;
	size_t		seen;
	size_t		i;
	char	   *p = out;

	for (i = 0; i < len; i++)
	{
		if (!is_continuation(u[i]))
		{
			/* The (HEAD+1)th code point starts where the head ends. */
			if (ncp == SE_MASK_HEAD)
				head_end = i;
			ncp++;
		}
	}

	if (ncp < SE_MASK_MIN)
	{
		memcpy(out, SE_MASK_HIDDEN, sizeof(SE_MASK_HIDDEN) - 1);
		return sizeof(SE_MASK_HIDDEN) - 1;
	}

	/* Walk back to the start of the TAIL-th code point from the end. */
	seen = 0;
	while (seen < SE_MASK_TAIL)
	{
		tail_start--;
		if (!is_continuation(u[tail_start]))
			seen++;
	}

	memcpy(p, s, head_end);
	p += head_end;
	memcpy(p, SE_MASK_ELLIPSIS, sizeof(SE_MASK_ELLIPSIS) - 1);
	p += sizeof(SE_MASK_ELLIPSIS) - 1;
	memcpy(p, s + tail_start, len - tail_start);
	p += len - tail_start;
	return (size_t) (p - out);
}
