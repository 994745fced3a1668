# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Dovecot Pigeonhole Sieve script: keep every message as usual, and pipe a
# copy of it to deltachat-push so a Delta Chat device is woken.
#
# Dovecot only runs programs from a directory the administrator chose.  Put
# a link to the program there and enable the extension, e.g. in
# /etc/dovecot/conf.d/90-sieve-extprograms.conf:
#
#     plugin {
#       sieve_plugins = sieve_extprograms
#       # programs "pipe" may run, by file name:
#       #   ln -s /usr/local/bin/deltachat-push /usr/lib/dovecot/sieve-pipe/
#       sieve_pipe_bin_dir = /usr/lib/dovecot/sieve-pipe
#       # let personal scripts (~/.dovecot.sieve) use "pipe"; only the
#       # programs in sieve_pipe_bin_dir can be run:
#       sieve_extensions = +vnd.dovecot.pipe
#       # (For all users at once, use sieve_global_extensions instead and
#       # install this script as sieve_after; then put a small wrapper in
#       # sieve_pipe_bin_dir that runs deltachat-push with
#       # --token-file="$HOME/...", as Dovecot sets HOME for each user.)
#       # Dovecot kills the program after sieve_pipe_exec_timeout (10 s);
#       # deltachat-push finishes well before (its HTTP timeout is 8 s).
#     }
#     protocol lda {
#       mail_plugins = $mail_plugins sieve
#     }
#     # or, with LMTP: protocol lmtp { mail_plugins = $mail_plugins sieve }
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
# with IMAP METADATA, read from the file of that name in the user's home;
# nobody copies a token, and the user's own mail causes no push.
#pipe :copy :try "deltachat-push" ["--dovecot-metadata=dovecot-attributes"];
