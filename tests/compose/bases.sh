#!/usr/bin/env bash
# Base images for the compose test (tests/test_compose.py), built from Debian packages because
# public registries are unreachable here. Only under LOCAL tags (lswh-ci-base/*): an official
# name (python:3.12-slim, redis:7.4-alpine, ...) would poison the engine's cache for the user's
# own builds. Each image is built only when missing, so a warm machine pays nothing.
#   tests/compose/bases.sh            build what is missing
#   LSWH_CI_BASE_REBUILD=1 ...        rebuild all
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
prefix="${LSWH_CI_BASE_PREFIX:-lswh-ci-base}"
suite=bookworm
mirror="${LSWH_CI_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

have() { [ -z "${LSWH_CI_BASE_REBUILD:-}" ] && docker image inspect "$1" >/dev/null 2>&1; }

if ! have "$prefix/debian:$suite"; then
  root="$(mktemp -d /var/tmp/lswh-ci-rootfs.XXXXXX)"
  trap 'rm -rf "$root"' EXIT
  echo "bases.sh: debootstrap $suite (minbase) from $mirror" >&2
  # mktemp made the directory 0700: it becomes the image's /, which every user must traverse.
  chmod 755 "$root"
  debootstrap --variant=minbase "$suite" "$root" "$mirror" >/dev/null
  # No daemons started by package scripts inside a build; no recommends, no apt caches kept.
  printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
  chmod 755 "$root/usr/sbin/policy-rc.d"
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' > "$root/etc/apt/apt.conf.d/90lswh-ci"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import -c 'CMD ["/bin/bash"]' - "$prefix/debian:$suite" >/dev/null
  rm -rf "$root"
  trap - EXIT
fi

# pip inside the project's build trusts the CA bundle this machine's pip is configured with:
# the python base carries it (and /etc/pip.conf naming it), the product's Dockerfile does not.
ca="${LSWH_CI_CA_BUNDLE:-$(python3 -m pip config get global.cert 2>/dev/null || true)}"
ca="${ca:-/etc/ssl/certs/ca-certificates.crt}"
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
cp "$ca" "$ctx/ca-bundle.crt"

for name in python redis prometheus nginx; do
  tag="$prefix/$name:$suite"
  if ! have "$tag"; then
    echo "bases.sh: building $tag" >&2
    docker build -q --network host --build-arg "BASE=$prefix/debian:$suite" \
      -f "$here/base/$name.Dockerfile" -t "$tag" "$ctx" >/dev/null
  fi
done
