/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* DCP_SANITIZED: built with a sanitizer (gcc says so with a macro, clang
 * only through __has_feature).  Some shortcuts must then be left out. */
#pragma once

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define DCP_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)                            \
    || __has_feature(memory_sanitizer)
#define DCP_SANITIZED 1
#endif
#endif
