/*
 * check.h - the project's one assertion.
 *
 * ASSERT(cond) states an invariant the code relies on (a comment beside it
 * says why it holds). It stays on in release builds, so keep it cheap: a
 * comparison, not a walk. A failure is a programmer's error, never an
 * operating one (those are handled and answered): it prints the file, the
 * line and the condition, and aborts. A loop guard that runs out asserts
 * too (ASSERT(n < bound)) rather than leaving the loop silently.
 */
#ifndef MXRING_CHECK_H
#define MXRING_CHECK_H

#include <stdio.h>
#include <stdlib.h>

static inline _Noreturn void check_failed(const char *file, int line, const char *what)
{
	fprintf(stderr, "mxring: %s:%d: assertion failed: %s\n", file, line, what);
	abort();
}

#define ASSERT(x)                                                                                  \
	do {                                                                                       \
		if (__builtin_expect(!(x), 0))                                                     \
			check_failed(__FILE__, __LINE__, #x);                                      \
	} while (0)

#endif
