/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The state directory: where everything a run keeps between runs lives.
 *
 * One directory (0700, files 0600), opened once without following
 * symlinks; every file is named after a hash of the token or of the
 * message, never after the token itself.  Its files, by concern:
 *
 * A token's marks (dcp-mark.h): the state machine's state (dcp-machine.h),
 * including a trailing push and an owed one, and the last answer:
 *   <hash>.full     mtime = when the token's bucket will be full again
 *   <hash>.last     mtime = start of the last push
 *   <hash>.lock     flock()ed while a run reads or changes the token's state
 *   <hash>.due      the rest of the machine's state (what is wanted, in
 *                   flight, due or owed, and the owner's pid) and the token
 *                   itself (to push it after a reboot), while anything is
 *                   wanted, owed or in flight; flock()ed by the detached
 *                   process that owns the token's next push for as long as
 *                   it lives, so a dead one (kill -9, a reboot) is seen
 *   <hash>.gone     the proxy answered 410 Gone
 *   <hash>.result   time and text of the last attempt, for --status
 *
 * Caller-mode retry records (dcp-retry.h), one per message:
 *   retry-<key>     failures so far, the first one's time, and the hashes
 *                   of the tokens already notified for the message
 *
 * The device registry (dcp-device.h), a source of tokens:
 *   <hash>.device   a remembered device token (read from Dovecot's
 *                   metadata): the token and where it came from;
 *                   mtime = last seen.
 *
 * The .due and .device files hold tokens, which must be kept to push them
 * later: they are 0600 like the rest.  Times in lib/ are microseconds
 * since the Epoch unless a name ends in _s (seconds), and are always
 * passed in, so tests can drive a clock of their own. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef struct _DcpState DcpState;

DcpState *dcp_state_open (const gchar *cache_root, GError **error);
const gchar *dcp_state_get_path (DcpState *state);
void dcp_state_free (DcpState *state);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DcpState, dcp_state_free)

G_END_DECLS
