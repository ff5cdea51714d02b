// printf-style formatting into std::string (gcc 12 has no std::format).
#pragma once

#include <cstdarg>
#include <string>

#if defined(__GNUC__)
#define MOE_PRINTF_LIKE(fmt_index, first_arg) __attribute__((format(printf, fmt_index, first_arg)))
#else
#define MOE_PRINTF_LIKE(fmt_index, first_arg)
#endif

namespace moe {

std::string strformat(const char* fmt, ...) MOE_PRINTF_LIKE(1, 2);
std::string vstrformat(const char* fmt, va_list args);

// "1.50 GiB", "512 B": for messages that a person reads.
std::string format_bytes(double bytes);

}  // namespace moe
