# The two commands a new machine (Debian/Ubuntu with Go) needs:
#   make dev    the demo: throwaway PostgreSQL, the server and the bell page
#   make test   the whole suite, as CI runs it
# Both install PostgreSQL's server binaries (and for tests Chromium) if missing.

.PHONY: dev test fuzz build generate bench deps

dev:
	scripts/deps.sh
	go run ./cmd/pgpush dev

test:
	scripts/test.sh

# Open-ended fuzzing of both fuzz targets, FUZZTIME each (make fuzz FUZZTIME=10m).
FUZZTIME ?= 2m
fuzz:
	go test -run='^$$' -fuzz='^FuzzVerify$$' -fuzztime=$(FUZZTIME) ./push/auth
	go test -run='^$$' -fuzz='^FuzzDecodeClientMessage$$' -fuzztime=$(FUZZTIME) ./push

build:
	go build -o bin/pgpush ./cmd/pgpush

generate:
	scripts/tool.sh sqlc generate

bench: build
	bin/pgpush bench steady
