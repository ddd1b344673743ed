#!/usr/bin/env bash
# Builds {{name}}.wasm: a component for wasm32-wasip2 (`rustup target add wasm32-wasip2`).
#
#   ./build.sh [OUT.wasm]        (default: target/{{name}}.wasm)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/target/{{name}}.wasm}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac

cargo build --quiet --release --target wasm32-wasip2 --manifest-path "$here/Cargo.toml"
target_dir="${CARGO_TARGET_DIR:-$here/target}"
mkdir -p "$(dirname "$out")"
cp "$target_dir/wasm32-wasip2/release/{{crate}}.wasm" "$out"
echo "$out"
