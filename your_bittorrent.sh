#!/bin/sh
# Runs bitrush with the given arguments, building the release binary first if needed.
# Build output goes to stderr only, so stdout carries nothing but the command's output.
set -e
cd "$(dirname "$0")"
cargo build --release --quiet --bin bitrush 1>&2
exec ./target/release/bitrush "$@"
