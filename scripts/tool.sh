#!/usr/bin/env bash
# Runs a developer tool (sqlc, staticcheck) at the version pinned in
# tools/go.mod, building it into bin/ on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1; shift
case "$name" in
  sqlc) pkg=github.com/sqlc-dev/sqlc/cmd/sqlc ;;
  staticcheck) pkg=honnef.co/go/tools/cmd/staticcheck ;;
  *) echo "unknown tool $name" >&2; exit 2 ;;
esac
bin="bin/$name-$(sha256sum tools/go.sum | cut -c1-12)"
if [ ! -x "$bin" ]; then
  mkdir -p bin
  (cd tools && go build -o "../$bin" "$pkg")
fi
exec "$bin" "$@"
