#!/usr/bin/env bash
# Builds {{name}}.wasm with the pinned componentize-py (requirements.txt), installed once
# into a virtual environment in a cache directory keyed by the requirements' hash.
#
#   ./build.sh [OUT.wasm]        (default: target/{{name}}.wasm)
#
# HOOKGATE_TOOLS_DIR moves the tool cache (default: target/plugin-tools here).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/target/{{name}}.wasm}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac

python="${PYTHON:-python3}"
command -v "$python" >/dev/null || { echo "build.sh: $python not found; install Python 3.10 or later" >&2; exit 1; }
req_hash="$(sha256sum "$here/requirements.txt" | cut -c1-16)"
tools="${HOOKGATE_TOOLS_DIR:-$here/target/plugin-tools}/componentize-py-$req_hash"
if [ ! -f "$tools/.installed" ]; then
  rm -rf "$tools"
  if ! { "$python" -m venv "$tools" >&2 &&
         "$tools/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2; }; then
    echo "build.sh: cannot install componentize-py from PyPI (see above); is the registry reachable?" >&2
    exit 1
  fi
  touch "$tools/.installed"
fi

mkdir -p "$(dirname "$out")"
cd "$here"
"$tools/bin/componentize-py" --wit-path wit --world source-plugin componentize app --output "$out" >&2
echo "$out"
