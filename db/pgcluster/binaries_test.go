package pgcluster

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func TestCompareVersions(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int // sign
	}{
		{"15", "9.6", 1},
		{"9.6", "10", -1},
		{"16", "16", 0},
		{"x", "9", -1},
	} {
		got := compareVersions(tc.a, tc.b)
		if (got > 0) != (tc.want > 0) || (got < 0) != (tc.want < 0) {
			t.Errorf("compareVersions(%q, %q) = %d, want sign %d", tc.a, tc.b, got, tc.want)
		}
	}
}

// TestFindBinariesDebianLayout checks the fallback for machines where the
// server binaries are only under /usr/lib/postgresql/<version>/bin.
func TestFindBinariesDebianLayout(t *testing.T) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(dirs) == 0 {
		t.Skip("no /usr/lib/postgresql/*/bin on this machine")
	}
	t.Setenv("PATH", t.TempDir())
	t.Setenv(binEnv, "")
	b, err := findBinaries()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(b.initdb, "/usr/lib/postgresql/") || filepath.Dir(b.initdb) != filepath.Dir(b.postgres) {
		t.Errorf("found %+v, want both in one /usr/lib/postgresql/<version>/bin", b)
	}
}

func TestFindBinariesEnvWins(t *testing.T) {
	t.Setenv(binEnv, t.TempDir())
	if _, err := findBinaries(); !errors.Is(err, ErrNoBinaries) {
		t.Errorf("findBinaries with an empty %s = %v, want ErrNoBinaries", binEnv, err)
	}
}
