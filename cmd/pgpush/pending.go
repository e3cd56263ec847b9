package main

import (
	"context"
	"errors"
	"io"
)

// TODO(issue 6): the load generator.

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("pgpush bench is not built yet")
}
