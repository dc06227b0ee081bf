#!/bin/sh
# The container's entrypoint (under tini). A platform volume is often mounted
# root-owned (Railway's are): as root, this hands DATA_DIR to the unprivileged
# user (GATEWAY_USER, the image's `gateway`) once, then drops to that user for
# good before anything else runs. Started as any other user, it runs start.sh
# as that user.
set -eu
user="${GATEWAY_USER:-gateway}"
if [ "$(id -u)" = 0 ]; then
  mkdir -p "$DATA_DIR"
  if [ "$(stat -c %U "$DATA_DIR")" != "$user" ]; then
    chown -R "$user:$(id -gn "$user")" "$DATA_DIR"
  fi
  chmod 700 "$DATA_DIR"
  # HOME follows the user (setpriv keeps root's); no-new-privs: a setuid binary of the
  # base image cannot give the privileges back.
  HOME="$(getent passwd "$user" | cut -d: -f6)"
  export HOME
  exec setpriv --reuid="$user" --regid="$(id -g "$user")" --init-groups --inh-caps=-all --no-new-privs \
    ./start.sh "$@"
fi
exec ./start.sh "$@"
