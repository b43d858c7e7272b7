#!/usr/bin/env bash
# Generate Slipway's client SDKs from proto/.
#
#   scripts/sdk.sh [python|typescript|all]     (default: all; `make sdk` runs all)
#
# python      grpcio-tools, pip-installed into a virtual environment at target/sdk/venv
#             (pinned in sdk/python/requirements.txt, reinstalled only when that file
#             changes); code written to sdk/python/src/slipway/. The venv gets a .pth
#             file so its python imports `slipway.*` and the helpers in `slipway_sdk`.
# typescript  protoc-gen-es (npm, pinned in sdk/typescript/package-lock.json) driven by
#             buf from the repository's own node_modules; code written to
#             sdk/typescript/gen/, then type-checked with tsc together with the example.
#
# google/protobuf imports resolve from the well-known types each generator ships
# (grpc_tools/_proto for protoc, buf's built-in copy for buf). google/rpc — Status,
# ErrorInfo, BadRequest, the error details every Slipway error carries — comes from
# googleapis-common-protos, a dependency of the Python SDK: Python imports it as
# `google.rpc`, and its .proto files are the input of the TypeScript google/rpc code.
# That is why the TypeScript step sets the Python venv up first.
#
# Fails with a message naming the registry when PyPI or npm cannot be reached. Runs under
# a lock (target/sdk/.lock), so `make sdk` and the SDK test never write over each other.
set -euo pipefail

log() { echo "sdk: $*" >&2; }
die() { log "error: $*"; exit 1; }

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}/sdk"
venv="$target/venv"
what="${1:-all}"
case "$what" in python | typescript | all) ;; *) die "usage: $0 [python|typescript|all]" ;; esac

mkdir -p "$target"
exec 9>"$target/.lock"
flock 9

# Every .proto of the contract, relative to proto/.
protos() { (cd "$root/proto" && find slipway -name '*.proto' | LC_ALL=C sort); }

# --------------------------------------------------------------------------- python

python_venv() {
  local requirements="$root/sdk/python/requirements.txt" stamp="$venv/.requirements"
  if [ -x "$venv/bin/python" ] && cmp -s "$requirements" "$stamp"; then
    return
  fi
  local python="${PYTHON:-python3}"
  command -v "$python" >/dev/null 2>&1 || die "$python not found: the Python SDK needs Python 3.9 or newer"
  log "creating $venv and installing sdk/python/requirements.txt from PyPI"
  rm -rf "$venv"
  "$python" -m venv "$venv" || die "cannot create a virtual environment with $python (on Debian: apt-get install python3-venv)"
  local out
  if ! out="$("$venv/bin/python" -m pip install --disable-pip-version-check --no-input -q \
    -r "$requirements" 2>&1)"; then
    echo "$out" >&2
    die "pip could not install the Python SDK's requirements: is PyPI reachable (or a mirror set in PIP_INDEX_URL)?"
  fi
  cp "$requirements" "$stamp"
}

python_sdk() {
  python_venv
  local out="$root/sdk/python/src"
  local wkt
  wkt="$("$venv/bin/python" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')"
  rm -rf "$out/slipway"
  mkdir -p "$out"
  local files
  mapfile -t files < <(protos)
  (cd "$root/proto" && "$venv/bin/python" -m grpc_tools.protoc -I . -I "$wkt" \
    --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" "${files[@]}") \
    || die "grpc_tools.protoc failed on proto/ (its message is above)"
  # Regular packages (not namespace ones), so tools and `pip install ./sdk/python` see them.
  find "$out/slipway" -type d -exec touch {}/__init__.py \;
  local site
  site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  echo "$out" >"$site/slipway-sdk.pth"
  "$venv/bin/python" -c 'import slipway_sdk, slipway.deploy.v1.deployment_service_pb2_grpc' \
    || die "the generated Python SDK does not import"
  log "python: ${#files[@]} protos → sdk/python/src/slipway (python: $venv/bin/python)"
}

# ----------------------------------------------------------------------- typescript

typescript_sdk() {
  command -v npm >/dev/null 2>&1 || die "npm not found: the TypeScript SDK needs Node.js 20 or newer"
  local buf="$root/node_modules/.bin/buf"
  if [ ! -x "$buf" ]; then
    log "installing buf (the repository's npm tooling)"
    (cd "$root" && npm install --no-audit --no-fund >&2) || die "npm could not install buf: is the npm registry reachable?"
  fi
  local ts="$root/sdk/typescript"
  if [ ! -x "$ts/node_modules/.bin/protoc-gen-es" ] || [ "$ts/package-lock.json" -nt "$ts/node_modules/.package-lock.json" ]; then
    log "installing sdk/typescript's npm packages"
    (cd "$ts" && npm ci --no-audit --no-fund >&2) || die "npm could not install sdk/typescript's packages: is the npm registry reachable?"
  fi
  # googleapis-common-protos ships the google/rpc .proto files; the venv has it.
  python_venv
  # Only the two files clients need, copied alone: buf builds every .proto of a
  # directory input, and site-packages holds many.
  local rpc="$target/googleapis"
  rm -rf "$rpc" && mkdir -p "$rpc/google/rpc"
  "$venv/bin/python" - "$rpc/google/rpc" <<'PY'
import os, shutil, sys
from google.rpc import status_pb2  # a namespace package: find it through a module
for name in ("status.proto", "error_details.proto"):
    shutil.copy(os.path.join(os.path.dirname(status_pb2.__file__), name), sys.argv[1])
PY
  rm -rf "$ts/gen"
  (cd "$root" && "$buf" generate --template sdk/typescript/buf.gen.yaml) \
    || die "buf generate failed on proto/ (its message is above)"
  (cd "$root" && "$buf" generate "$rpc" --template sdk/typescript/buf.gen.yaml) \
    || die "buf generate failed on google/rpc (its message is above)"
  (cd "$ts" && node_modules/.bin/tsc --noEmit -p .) || die "the generated TypeScript SDK does not type-check"
  log "typescript: $(find "$ts/gen" -name '*.ts' | wc -l) files → sdk/typescript/gen (type-checked)"
}

case "$what" in
  python) python_sdk ;;
  typescript) typescript_sdk ;;
  all) python_sdk && typescript_sdk ;;
esac
