// Command pgpush pushes the rows of a PostgreSQL notifications table to the
// browsers of the users they are for. See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "pgpush:", err)
		os.Exit(1)
	}
}

const usage = `pgpush — real-time pushes of a PostgreSQL notifications table

Usage:
  pgpush serve [flags]              run the push server (DATABASE_URL)
  pgpush migrate up|down|status     apply, roll back or show the schema migrations
  pgpush dev [flags]                zero-setup demo on a throwaway local PostgreSQL
  pgpush token --user ID [--ttl 1h] print an HS256 token signed with PGPUSH_JWT_SECRET
  pgpush bench [flags]              load generator (see pgpush bench -h)
  pgpush version                    version, commit and Go version

Every flag can also be set by its environment variable (pgpush CMD -h lists
them); a flag wins over the variable.
`

// run dispatches a subcommand.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return runServe(ctx, rest, stderr)
	case "migrate":
		return runMigrate(ctx, rest, stdout, stderr)
	case "dev":
		return runDev(ctx, rest, stdout, stderr)
	case "token":
		return runToken(rest, stdout, stderr)
	case "bench":
		return runBench(ctx, rest, stdout, stderr)
	case "version", "--version", "-v":
		return runVersion(stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}
