#!/bin/sh
# Starts the function: builds it first where a Rust toolchain is present (local mode), then runs
# the binary (which the image ships at the same path).
set -e
if command -v cargo >/dev/null; then
  cargo build --release --quiet
fi
exec ./target/release/hello-rust
