package pgcluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// ErrNoBinaries is returned by Start when no PostgreSQL server binaries
// (initdb and postgres) can be found.
var ErrNoBinaries = errors.New("PostgreSQL server binaries (initdb, postgres) not found")

// binEnv names the environment variable that points at a directory holding
// initdb and postgres. It wins over every other place, so a machine with
// several PostgreSQL versions can pick one.
const binEnv = "PGPUSH_PG_BIN"

// binaries are the absolute paths of the server programs a cluster runs.
type binaries struct {
	initdb   string
	postgres string
}

// findBinaries looks for initdb and postgres in $PGPUSH_PG_BIN, then on PATH,
// then in the newest /usr/lib/postgresql/<version>/bin, where Debian and
// Ubuntu install them without putting them on PATH.
func findBinaries() (binaries, error) {
	if dir := os.Getenv(binEnv); dir != "" {
		b, err := binariesIn(dir)
		if err != nil {
			return binaries{}, fmt.Errorf("%s=%s: %w", binEnv, dir, err)
		}
		return b, nil
	}
	initdb, err1 := exec.LookPath("initdb")
	postgres, err2 := exec.LookPath("postgres")
	if err1 == nil && err2 == nil {
		return binaries{initdb: initdb, postgres: postgres}, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		return -compareVersions(filepath.Base(filepath.Dir(a)), filepath.Base(filepath.Dir(b)))
	})
	for _, dir := range dirs {
		if b, err := binariesIn(dir); err == nil {
			return b, nil
		}
	}
	return binaries{}, fmt.Errorf("%w: searched $%s, PATH and /usr/lib/postgresql/*/bin", ErrNoBinaries, binEnv)
}

// binariesIn returns the server programs in dir, or an error if either is
// missing or not executable.
func binariesIn(dir string) (binaries, error) {
	var b binaries
	for _, p := range []struct {
		name string
		dst  *string
	}{{"initdb", &b.initdb}, {"postgres", &b.postgres}} {
		path, err := exec.LookPath(filepath.Join(dir, p.name))
		if err != nil {
			return binaries{}, fmt.Errorf("%w: %w", ErrNoBinaries, err)
		}
		abs, err := filepath.Abs(path)
		if err != nil {
			return binaries{}, fmt.Errorf("%w: %w", ErrNoBinaries, err)
		}
		*p.dst = abs
	}
	return b, nil
}

// compareVersions orders dotted version strings numerically ("9.6" < "15"),
// putting anything that does not parse first.
func compareVersions(a, b string) int {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < max(len(pa), len(pb)); i++ {
		var na, nb int = -1, -1
		if i < len(pa) {
			if n, err := strconv.Atoi(pa[i]); err == nil {
				na = n
			}
		}
		if i < len(pb) {
			if n, err := strconv.Atoi(pb[i]); err == nil {
				nb = n
			}
		}
		if na != nb {
			return na - nb
		}
	}
	return 0
}
