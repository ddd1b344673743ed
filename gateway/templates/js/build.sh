#!/usr/bin/env bash
# Builds {{name}}.wasm with the pinned componentize-js (package-lock.json), installed once
# with `npm ci` into a cache directory keyed by the lock file's hash.
#
#   ./build.sh [OUT.wasm]        (default: target/{{name}}.wasm)
#
# HOOKGATE_TOOLS_DIR moves the tool cache (default: target/plugin-tools here).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/target/{{name}}.wasm}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac

command -v npm >/dev/null || { echo "build.sh: npm not found; install Node.js 18 or later" >&2; exit 1; }
lock_hash="$(sha256sum "$here/package-lock.json" | cut -c1-16)"
tools="${HOOKGATE_TOOLS_DIR:-$here/target/plugin-tools}/componentize-js-$lock_hash"
if [ ! -f "$tools/.installed" ]; then
  mkdir -p "$tools"
  cp "$here/package.json" "$here/package-lock.json" "$tools/"
  if ! (cd "$tools" && npm ci --no-audit --no-fund --loglevel=error >&2); then
    echo "build.sh: cannot install componentize-js from npm (see above); is the registry reachable?" >&2
    exit 1
  fi
  touch "$tools/.installed"
fi

mkdir -p "$(dirname "$out")"
# componentize-js only reads files under the working directory.
cd "$here"
"$tools/node_modules/.bin/componentize-js" plugin.js --wit wit --world-name source-plugin \
  --disable stdio random clocks http fetch-event --out "$out" >&2
echo "$out"
