// The test binary's entry point: doctest with its usual command line
// (--test-case=..., --test-suite=..., -s). Output ends with doctest's summary line.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
