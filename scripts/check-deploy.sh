#!/usr/bin/env bash
# Validate the packaging in deploy/ with whichever tools this machine has; each check
# says whether it ran or why it could not.
#
#   scripts/check-deploy.sh
#
#   nginx -t        deploy/nginx/slipway.conf, in a scratch prefix: upstream host names
#                   (resolved at load time) become 127.0.0.1 and a throwaway self-signed
#                   certificate stands in for the real one. (Debian: apt-get install nginx)
#   nats-server -t  deploy/nats/nats.conf; `sync_interval` is dropped first when the local
#                   server predates it (2.10), saying so.
#   docker compose config   deploy/compose.yaml with placeholder secrets (or Debian's
#                   docker-compose).
#   helm lint / helm template   deploy/helm/slipway.
#
# Exits non-zero when a check that ran failed. Images are not built (that needs a
# registry to pull the base images from).
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=0
say() { echo "check-deploy: $*"; }
fail() { say "FAILED: $*"; failed=1; }

# -------------------------------------------------------------------------- nginx
if command -v nginx >/dev/null 2>&1; then
  mkdir -p "$scratch/nginx/tls" "$scratch/nginx/logs"
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
    -keyout "$scratch/nginx/tls/tls.key" -out "$scratch/nginx/tls/tls.crt" 2>/dev/null
  sed -E -e 's/server (identity|catalog|orchestrator|build-runner|log-streaming):(7800|7809);/server 127.0.0.1:\2;/' \
    -e "s#/etc/nginx/tls/#$scratch/nginx/tls/#" \
    "$root/deploy/nginx/slipway.conf" >"$scratch/nginx/slipway.conf"
  cat >"$scratch/nginx/nginx.conf" <<EOF
pid $scratch/nginx/nginx.pid;
error_log $scratch/nginx/logs/error.log;
events {}
http {
    access_log off;
    client_body_temp_path $scratch/nginx/tmp;
    include $scratch/nginx/slipway.conf;
}
EOF
  if out="$(nginx -t -p "$scratch/nginx" -c "$scratch/nginx/nginx.conf" 2>&1)"; then
    say "nginx -t: ok ($(nginx -v 2>&1))"
  else
    echo "$out"
    fail "nginx -t on deploy/nginx/slipway.conf"
  fi
else
  say "nginx -t: skipped, no nginx here (Debian: apt-get install nginx)"
fi

# --------------------------------------------------------------------------- nats
if command -v nats-server >/dev/null 2>&1; then
  conf="$root/deploy/nats/nats.conf"
  version="$(nats-server --version 2>&1 | sed -E 's/.*v([0-9]+)\.([0-9]+).*/\1 \2/')"
  read -r major minor <<<"$version"
  if [ "${major:-0}" -lt 2 ] || { [ "${major:-0}" -eq 2 ] && [ "${minor:-0}" -lt 10 ]; }; then
    say "nats: local nats-server is $major.$minor, older than sync_interval (2.10): checking the rest"
    grep -v 'sync_interval' "$conf" >"$scratch/nats.conf"
    conf="$scratch/nats.conf"
  fi
  # The store key is the operator's; any value checks the rest.
  if out="$(JETSTREAM_KEY=check-only nats-server -t -c "$conf" 2>&1)"; then
    say "nats-server -t: ok"
  else
    echo "$out"
    fail "nats-server -t on deploy/nats/nats.conf"
  fi
else
  say "nats-server -t: skipped, no nats-server here"
fi

# ------------------------------------------------------------------------ compose
compose=()
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose) # Debian's docker-compose (v1) reads the same file format
fi
if [ "${#compose[@]}" -gt 0 ]; then
  : >"$scratch/empty.env"
  if out="$(cd "$root/deploy" && POSTGRES_PASSWORD=placeholder \
    SLIPWAY_SERVICE_CREDENTIAL=slps_placeholder SLIPWAY_MASTER_KEY=00 SLIPWAY_NATS_STORE_KEY=00 \
    "${compose[@]}" -f compose.yaml --env-file "$scratch/empty.env" config -q 2>&1)"; then
    say "${compose[*]} config: ok"
  else
    echo "$out"
    fail "${compose[*]} config on deploy/compose.yaml"
  fi
else
  say "compose config: skipped, neither docker compose nor docker-compose here (Debian: apt-get install docker-compose)"
fi

# --------------------------------------------------------------------------- helm
if command -v helm >/dev/null 2>&1; then
  if helm lint "$root/deploy/helm/slipway" && helm template slipway "$root/deploy/helm/slipway" >/dev/null; then
    say "helm lint + template: ok"
  else
    fail "helm lint on deploy/helm/slipway"
  fi
else
  say "helm lint: skipped, no helm here (not packaged by Debian 12)"
fi

exit "$failed"
