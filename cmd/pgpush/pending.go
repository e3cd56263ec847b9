package main

import (
	"context"
	"errors"
	"io"
)

// TODO(issue 5, issue 6): the demo and the load generator.

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("pgpush dev is not built yet")
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("pgpush bench is not built yet")
}
