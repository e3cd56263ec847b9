#!/usr/bin/env bash
# The full test suite: what CI runs (.ci/run) and what `make test` runs.
# It installs PostgreSQL's server binaries, Chromium, Node.js and npm when missing, then runs
# formatting, vet, staticcheck (pinned in tools/go.mod), the go.mod and sqlc
# drift checks, the race-enabled tests (browser tests included) and short
# fuzz runs.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s\n' "$*"; }

step "dependencies"
scripts/deps.sh --browser

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then echo "not gofmt-formatted:"; echo "$unformatted"; exit 1; fi

step "go vet"
go vet ./...

step "staticcheck"
scripts/tool.sh staticcheck ./...

step "go mod tidy"
go mod tidy
(cd tools && go mod tidy)
git diff --exit-code -- go.mod go.sum tools/go.mod tools/go.sum

step "sqlc generate"
scripts/tool.sh sqlc generate
git diff --exit-code -- db/
if [ -n "$(git status --porcelain -- db/*.go)" ]; then
  echo "sqlc generated files that are not checked in:"; git status --porcelain -- db/*.go; exit 1
fi

step "go test -race"
export PGPUSH_REQUIRE_BROWSER=1
# Throwaway clusters and template clones are much faster on tmpfs.
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ "$(df -Pk /dev/shm | awk 'NR==2 {print $4}')" -gt 4194304 ]; then
  export TMPDIR=/dev/shm
fi
go test -race -count=1 -timeout 20m ./...

step "fuzz"
# An execution budget, not a duration: a duration -fuzztime can fail a run
# that found nothing when it expires while a worker is busy (Go's fuzzing
# coordinator race, golang/go#75804, fixed only in Go 1.27). The budgets are
# about ten seconds of fuzzing each on an idle 2-core machine; a real crasher
# still fails the run and is written under testdata/fuzz. Open-ended fuzzing:
# `make fuzz`.
go test -run='^$' -fuzz='^FuzzVerify$' -fuzztime=80000x ./push/auth
go test -run='^$' -fuzz='^FuzzDecodeClientMessage$' -fuzztime=25000x ./push

echo
echo "all checks passed"
