#!/bin/sh
# Runs bitrush with the given arguments, building the shipped (`dist` profile) binary first if
# needed.
#
# Stdout carries nothing but the command's output: the build's messages go to stderr. When the
# binary is missing, or a source file or manifest is newer than it, the script says so
# ("building bitrush (first run only)…") and shows cargo's own progress, so a first build of a
# few minutes does not look hung; otherwise cargo runs quietly (a no-op check of a fraction of a
# second). With -q/--quiet among the arguments the build is quiet too (errors still show).
# The working directory is left alone so relative paths in the arguments keep their meaning.
set -e
here="$(cd "$(dirname "$0")" && pwd)"
bin="${CARGO_TARGET_DIR:-$here/target}/dist/bitrush"

quiet=
for arg in "$@"; do
    case "$arg" in
    -q | --quiet) quiet=1 ;;
    esac
done

# What the build depends on: Rust sources under a src/ folder and the manifests.
stale() {
    [ -n "$(find "$here/Cargo.toml" "$here/Cargo.lock" "$here/src" "$here/crates" \
        \( -name Cargo.toml -o -name Cargo.lock -o -path '*/src/*.rs' \) \
        -newer "$bin" -print 2>/dev/null | head -n 1)" ]
}

if [ -n "$quiet" ]; then
    cargo build --profile dist --quiet --bin bitrush --manifest-path "$here/Cargo.toml" 1>&2
elif [ ! -x "$bin" ]; then
    echo "building bitrush (first run only)…" >&2
    cargo build --profile dist --bin bitrush --manifest-path "$here/Cargo.toml" 1>&2
elif stale; then
    echo "rebuilding bitrush (sources changed)…" >&2
    cargo build --profile dist --bin bitrush --manifest-path "$here/Cargo.toml" 1>&2
else
    cargo build --profile dist --quiet --bin bitrush --manifest-path "$here/Cargo.toml" 1>&2
fi
exec "$bin" "$@"
