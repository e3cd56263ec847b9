#!/usr/bin/env bash
# Installs what pgpush's demo and tests need on a Debian/Ubuntu machine with
# Go: PostgreSQL's server binaries and (with --browser) Chromium, Node.js and
# npm (the React example's test packs, installs and bundles with them). Each is
# installed only when missing.
set -euo pipefail

browser=0
[ "${1:-}" = "--browser" ] && browser=1

have_postgres() {
  [ -n "${PGPUSH_PG_BIN:-}" ] && [ -x "$PGPUSH_PG_BIN/postgres" ] && return 0
  command -v postgres >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1 && return 0
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

have_chromium() {
  command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1
}

pkgs=()
have_postgres || pkgs+=(postgresql)
if [ "$browser" = 1 ]; then
  have_chromium || pkgs+=(chromium)
  # Only what is missing: a Node.js from elsewhere (NodeSource, nvm) brings
  # its own npm, and Debian's npm package would pull Debian's nodejs.
  command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
  command -v npm >/dev/null 2>&1 || pkgs+=(npm)
fi
[ ${#pkgs[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "need root (or sudo) to install: ${pkgs[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "installing: ${pkgs[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# The postgresql package would start a system cluster; pgpush never uses it.
$sudo apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
