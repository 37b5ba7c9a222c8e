/*
 * A tiny unit-test harness. A test file defines TEST(name) functions and
 * nothing else; the harness supplies main(). Each test prints one line,
 * "PASS file:name" or "FAIL file:name", which tests/run.sh counts.
 * A failed CHECK prints where and why, then returns from the test.
 */
#ifndef METAC_UNIT_H
#define METAC_UNIT_H

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct unit_test {
	const char *name;
	void (*fn)(void);
	struct unit_test *next;
};

static struct unit_test *unit_head, **unit_tail = &unit_head;
static int unit_failed_now;

#define TEST(name)                                                         \
	static void test_##name(void);                                     \
	static struct unit_test unit_##name = { #name, test_##name, NULL }; \
	__attribute__((constructor)) static void unit_reg_##name(void)     \
	{                                                                  \
		*unit_tail = &unit_##name;                                 \
		unit_tail = &unit_##name.next;                             \
	}                                                                  \
	static void test_##name(void)

#define UNIT_FAIL(...)                                                     \
	do {                                                               \
		fprintf(stderr, "  %s:%d: ", __FILE__, __LINE__);          \
		fprintf(stderr, __VA_ARGS__);                              \
		fputc('\n', stderr);                                       \
		unit_failed_now = 1;                                       \
	} while (0)

#define CHECK(c)                                                           \
	do {                                                               \
		if (!(c)) {                                                \
			UNIT_FAIL("check failed: %s", #c);                 \
			return;                                            \
		}                                                          \
	} while (0)

#define CHECK_INT(a, b)                                                    \
	do {                                                               \
		long long a_ = (long long)(a), b_ = (long long)(b);        \
		if (a_ != b_) {                                            \
			UNIT_FAIL("%s == %lld, expected %s == %lld", #a, a_, \
				  #b, b_);                                 \
			return;                                            \
		}                                                          \
	} while (0)

#define CHECK_STR(a, b)                                                    \
	do {                                                               \
		const char *a_ = (a), *b_ = (b);                           \
		if (!a_ || !b_ || strcmp(a_, b_)) {                        \
			UNIT_FAIL("%s == \"%s\", expected \"%s\"", #a,     \
				  a_ ? a_ : "(null)", b_ ? b_ : "(null)"); \
			return;                                            \
		}                                                          \
	} while (0)

#define CHECK_MEM(a, b, n)                                                 \
	do {                                                               \
		if (memcmp((a), (b), (n))) {                               \
			UNIT_FAIL("%s differs from %s", #a, #b);           \
			return;                                            \
		}                                                          \
	} while (0)

static inline const char *unit_base(const char *path)
{
	const char *s = strrchr(path, '/');
	return s ? s + 1 : path;
}

int main(int argc, char **argv)
{
	int failed = 0;
	const char *file = unit_base(argv[0]);
	for (struct unit_test *t = unit_head; t; t = t->next) {
		if (argc > 1 && strcmp(argv[1], t->name))
			continue;
		unit_failed_now = 0;
		t->fn();
		printf("%s %s:%s\n", unit_failed_now ? "FAIL" : "PASS", file,
		       t->name);
		fflush(stdout);
		failed += unit_failed_now;
	}
	return failed ? 1 : 0;
}

#endif
