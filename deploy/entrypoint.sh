#!/bin/sh
# The container's entrypoint (under tini). A platform volume is often mounted
# root-owned (Railway's are): as root, this hands DATA_DIR to the unprivileged
# `gateway` user once, then drops to that user for good before anything else
# runs. Started as any other user, it runs start.sh as that user.
set -eu
if [ "$(id -u)" = 0 ]; then
  mkdir -p "$DATA_DIR"
  if [ "$(stat -c %U "$DATA_DIR")" != gateway ]; then
    chown -R gateway:gateway "$DATA_DIR"
  fi
  chmod 700 "$DATA_DIR"
  exec setpriv --reuid=gateway --regid=gateway --init-groups --inh-caps=-all ./start.sh "$@"
fi
exec ./start.sh "$@"
