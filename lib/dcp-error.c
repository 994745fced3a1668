/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "dcp-error.h"

/* clang-format off */
G_DEFINE_QUARK (dcp-error-quark, dcp_error)
/* clang-format on */
