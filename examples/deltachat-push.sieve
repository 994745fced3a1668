# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Dovecot Pigeonhole Sieve script: keep every message as usual, and pipe a
# copy of it to deltachat-push so a Delta Chat device is woken.
#
# Dovecot only runs programs from a directory the administrator chose, and
# only with the sieve_extprograms plugin.  For the line below, the
# dovecot.conf part is in two files next to this one, one per syntax (see
# `dovecot --version`):
#
#     Dovecot 2.4 (Debian 13):  examples/dovecot-2.4-sieve.conf
#     Dovecot 2.3 (Debian 12):  examples/dovecot-2.3-sieve.conf
#
# Copy the one for your version to /etc/dovecot/conf.d/ as its first lines
# say (2.4 refuses 2.3 syntax, "The first setting must be
# dovecot_config_version", and 2.3 refuses 2.4 syntax).
#
# Then add the lines below to the user's Sieve script (~/.dovecot.sieve),
# after the rules that file mail away (spam, lists) if it should not wake
# the phone for those.
#
# Why "pipe :copy :try":
#   :copy  "pipe" is a delivering action: without :copy it cancels the
#          implicit keep and the message is NOT stored in the mailbox.
#   :try   a failing program (exit 75: the notification service did not
#          answer) is only logged; without :try it makes the script fail
#          (the message is still kept, but the user's Sieve log fills up).
#          Dovecot never retries it either way.
# The program runs as the mail user, with HOME set to the user's home, and
# gets the message on its stdin with CRLF line ends.  Dovecot stores the
# message right after the program has exited, so the push leaves a moment
# (milliseconds) before the message can be seen over IMAP; the device
# takes longer than that to wake up.
# The tokens come from a file (one per line, chmod 600), not from the
# arguments, which every local user can see in ps(1).

require ["vnd.dovecot.pipe", "copy"];

pipe :copy :try "deltachat-push" ["--token-file=/home/alice/.config/deltachat-push/tokens"];

# On your own Dovecot, for every user at once: a global script run after
# each user's own (sieve_after, see examples/dovecot-2.3-metadata.conf and
# dovecot-2.4-metadata.conf), with this line instead of the one above.
# The tokens are then the ones Delta Chat itself stored on the server
# with IMAP METADATA, read from the file of that name in the user's home,
# and those the login hook (examples/deltachat-push.lua) recorded at IMAP
# logins and logouts in dovecot-attributes.devices beside it: every
# device of the account; nobody copies a token, and the user's own mail
# causes no push.
#pipe :copy :try "deltachat-push" ["--dovecot-metadata=dovecot-attributes"];
