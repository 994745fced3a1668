/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* CHECK() for the fuzz drivers: a broken promise aborts, so libFuzzer
 * keeps the input that broke it. */
#pragma once

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                                                \
  do                                                                                               \
    {                                                                                              \
      if (!(cond))                                                                                 \
        {                                                                                          \
          fprintf (stderr, "broken promise: %s (%s:%d)\n", #cond, __FILE__, __LINE__);             \
          abort ();                                                                                \
        }                                                                                          \
    }                                                                                              \
  while (0)
