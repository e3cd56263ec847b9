# The two commands a new machine (Debian/Ubuntu with Go) needs:
#   make dev    the demo: throwaway PostgreSQL, the server and the bell page
#   make test   the whole suite, as CI runs it
# Both install PostgreSQL's server binaries (and for tests Chromium) if missing.

.PHONY: dev test build generate bench deps

dev:
	scripts/deps.sh
	go run ./cmd/pgpush dev

test:
	scripts/test.sh

build:
	go build -o bin/pgpush ./cmd/pgpush

generate:
	scripts/tool.sh sqlc generate

bench: build
	bin/pgpush bench steady
