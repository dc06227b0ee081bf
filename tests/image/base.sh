#!/usr/bin/env bash
# A local stand-in for python:3.11-slim, for building the project's Dockerfile where no
# image registry is reachable (the test machines): Debian bookworm (debootstrap
# minbase, from this machine's Debian mirror) with Debian's python3 and pip, tagged
# docker.io/library/python:3.11-slim so that `podman build --pull=never` takes it.
# What differs from the official image: Python is Debian's 3.11.2 in /usr/bin (the
# official one builds 3.11.x into /usr/local), pip is Debian's, and the apt/dpkg
# settings are copied from the official Debian images. Made once per machine (podman
# keeps it); tests/system/test_image.py calls this when the tag is missing.
#   CONTAINERS_CONF=... bash tests/image/base.sh WORKDIR
set -euo pipefail
WORK=${1:?work directory}
BASE=docker.io/library/python:3.11-slim
ROOTFS=$WORK/rootfs
MIRROR=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || echo http://deb.debian.org/debian)
export DEBIAN_FRONTEND=noninteractive
rm -rf "$ROOTFS"
nice -n 10 debootstrap --variant=minbase bookworm "$ROOTFS" "$MIRROR"
rm -f "$ROOTFS/etc/apt/sources.list"
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
  install -D -m 644 /etc/apt/sources.list.d/debian.sources "$ROOTFS/etc/apt/sources.list.d/debian.sources"
else
  echo "deb $MIRROR bookworm main" >"$ROOTFS/etc/apt/sources.list"
fi
cat >"$ROOTFS/etc/apt/apt.conf.d/docker-clean" <<'CONF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CONF
echo 'Acquire::Languages "none";' >"$ROOTFS/etc/apt/apt.conf.d/docker-no-languages"
cat >"$ROOTFS/etc/dpkg/dpkg.cfg.d/docker" <<'CONF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
CONF
# A machine whose egress re-signs TLS has its CA here: the build's pip must trust it.
mkdir -p "$ROOTFS/usr/local/share/ca-certificates"
cp /usr/local/share/ca-certificates/*.crt "$ROOTFS/usr/local/share/ca-certificates/" 2>/dev/null || true
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
cat >"$ROOTFS/tmp/setup.sh" <<'SETUP'
#!/bin/sh
set -eu
export DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8
printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
apt-get update
apt-get upgrade -y
apt-get install -y --no-install-recommends ca-certificates netbase tzdata python3 python3-pip python3-venv
update-ca-certificates
ln -sf /usr/bin/python3 /usr/local/bin/python
ln -sf /usr/bin/pip3 /usr/local/bin/pip
rm -f /usr/lib/python3.11/EXTERNALLY-MANAGED
apt-get clean
rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d /var/cache/apt/*.bin /var/log/apt/* /var/log/dpkg.log
find /usr/share/doc -mindepth 1 -not -type d -not -name copyright -delete
rm -rf /usr/share/man/* /usr/share/info/* /usr/share/locale/*
: >/etc/resolv.conf
rm -rf /tmp/* 2>/dev/null || true
SETUP
nice -n 10 unshare --mount --fork sh -c "
  mount -t proc proc '$ROOTFS/proc' && mount --rbind /dev '$ROOTFS/dev' &&
  chroot '$ROOTFS' /bin/sh /tmp/setup.sh"
tar --numeric-owner --xattrs -C "$ROOTFS" -cf - . | podman import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
  --message 'stand-in for python:3.11-slim: debootstrap bookworm minbase + Debian python3/pip' \
  - "$BASE"
rm -rf "$ROOTFS"
