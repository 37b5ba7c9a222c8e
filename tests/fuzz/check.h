/* What every libFuzzer target here checks with: a failed check is a
 * crash, which libFuzzer reports and keeps the input of. */
#ifndef METAC_FUZZ_CHECK_H
#define METAC_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

#endif
