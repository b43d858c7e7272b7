#!/usr/bin/env bash
# Install nginx (Debian's package) when it is missing: the distributed end-to-end test puts
# deploy/nginx/slipway.conf in front of the services, as a real install does.
#
# Idempotent and fast when nginx is on PATH; as root, through apt-get; concurrent callers
# are serialised by a lock file. The package's own service is stopped and disabled: tests
# run their own nginx on free ports.
set -euo pipefail

log() { echo "install-nginx: $*" >&2; }
have() { command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; }

have && exit 0
[ "$(id -u)" = 0 ] || { log "error: nginx is missing; run as root to install it"; exit 1; }
command -v apt-get >/dev/null 2>&1 || { log "error: nginx is missing and there is no apt-get here"; exit 1; }

exec 9>"${TMPDIR:-/tmp}/slipway-install-nginx.lock"
flock 9
have && exit 0

log "installing nginx"
export DEBIAN_FRONTEND=noninteractive
apt-cache show nginx >/dev/null 2>&1 || apt-get update -q >&2
apt-get install -y -q --no-install-recommends nginx >&2
if command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now nginx >/dev/null 2>&1 || true
fi
pkill -x nginx 2>/dev/null || true
log "installed nginx"
