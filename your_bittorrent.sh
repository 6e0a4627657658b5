#!/bin/sh
# Runs bitrush with the given arguments, building the release binary first if needed.
# Build output goes to stderr only, so stdout carries nothing but the command's output.
# The working directory is left alone so relative paths in the arguments keep their meaning.
set -e
here="$(cd "$(dirname "$0")" && pwd)"
cargo build --release --quiet --bin bitrush --manifest-path "$here/Cargo.toml" 1>&2
exec "${CARGO_TARGET_DIR:-$here/target}/release/bitrush" "$@"
