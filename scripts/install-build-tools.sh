#!/usr/bin/env bash
# Install the tools the build-runner's image tests need, when they are missing:
#
#   scripts/install-build-tools.sh     buildah (with runc), docker-registry, busybox-static
#
# Debian packages through apt-get, as root. Idempotent: when every tool is already on PATH it
# returns at once without touching apt. Several test processes may call it at the same time:
# a lock file serialises them, and the second one finds the tools installed.
# buildctl (BuildKit) is not packaged for Debian 12; it is not installed here.
set -euo pipefail

log() { echo "install-build-tools: $*" >&2; }

missing() {
  local packages=()
  command -v buildah >/dev/null 2>&1 || packages+=(buildah)
  command -v runc >/dev/null 2>&1 || packages+=(runc)
  command -v docker-registry >/dev/null 2>&1 || packages+=(docker-registry)
  # A static busybox is the base image tests build locally (nothing is pulled).
  [ -x /bin/busybox ] || packages+=(busybox-static)
  echo "${packages[@]:-}"
}

[ -z "$(missing)" ] && exit 0

[ "$(id -u)" = 0 ] || { log "error: missing $(missing); run as root to install them"; exit 1; }
command -v apt-get >/dev/null 2>&1 || { log "error: missing $(missing) and no apt-get here"; exit 1; }

lock="${TMPDIR:-/tmp}/slipway-install-build-tools.lock"
exec 9>"$lock"
flock 9

packages="$(missing)"
[ -z "$packages" ] && exit 0

log "installing $packages"
export DEBIAN_FRONTEND=noninteractive
# Only refresh the package lists when apt has never fetched them (a fresh machine).
if ! apt-cache show buildah docker-registry busybox-static >/dev/null 2>&1; then
  apt-get update -q >&2
fi
# shellcheck disable=SC2086 # a list of package names
apt-get install -y -q --no-install-recommends $packages >&2
# The Debian package starts a registry service on :5000; tests start their own.
if command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi
log "installed $packages"
