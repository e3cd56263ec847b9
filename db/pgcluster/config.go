package pgcluster

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// confFile is the file, in the data directory, that holds pgcluster's
// settings. postgresql.conf includes it at its end, so these settings beat
// initdb's, and ALTER SYSTEM (postgresql.auto.conf, read last) still beats
// them.
const confFile = "pgcluster.conf"

// maxSocketPath is the longest Unix socket path Linux accepts (sun_path is
// 108 bytes including the terminating NUL).
const maxSocketPath = 107

var settingName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*$`)

// settings returns the postgresql.conf settings for a cluster in folder
// listening on port: pgcluster's defaults overlaid with opts.Settings.
func settings(opts Options, folder string, port int) (map[string]string, error) {
	s := map[string]string{
		"listen_addresses": "127.0.0.1",
		"port":             strconv.Itoa(port),
		// The default, /var/run/postgresql, may not exist or may belong to
		// another server; a socket in the folder is private to this cluster.
		"unix_socket_directories": folder,
		// Tests run many pools at once, and bench opens many connections.
		"max_connections": "500",
		"shared_buffers":  "64MB",
	}
	if len(folder)+len("/.s.PGSQL.65535") > maxSocketPath {
		// The folder path is too long for a socket; TCP is all we use.
		s["unix_socket_directories"] = ""
	}
	if !opts.Durable {
		// A throwaway cluster never needs to survive an OS crash; these make
		// commits and CREATE DATABASE several times faster.
		s["fsync"] = "off"
		s["synchronous_commit"] = "off"
		s["full_page_writes"] = "off"
	}
	for name, value := range opts.Settings {
		if !settingName.MatchString(name) {
			return nil, fmt.Errorf("setting %q: not a parameter name", name)
		}
		if strings.EqualFold(name, "port") {
			return nil, fmt.Errorf("setting %q: set Options.Port instead", name)
		}
		if strings.ContainsAny(value, "\x00\r\n") {
			return nil, fmt.Errorf("setting %s: value contains a line break or NUL", name)
		}
		s[strings.ToLower(name)] = value
	}
	return s, nil
}

// writeSettings writes s to the data directory's pgcluster.conf, owned by u.
func writeSettings(dataDir string, s map[string]string, u *serverUser) error {
	var b strings.Builder
	b.WriteString("# Written by pgpush's pgcluster; rewritten on every start of a new cluster.\n")
	for _, name := range slices.Sorted(maps.Keys(s)) {
		fmt.Fprintf(&b, "%s = %s\n", name, quoteSetting(s[name]))
	}
	path := filepath.Join(dataDir, confFile)
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("write settings: %w", err)
	}
	return u.chown(path)
}

// includeSettings makes postgresql.conf read pgcluster.conf at its end.
func includeSettings(dataDir string) error {
	f, err := os.OpenFile(filepath.Join(dataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open postgresql.conf: %w", err)
	}
	_, err = fmt.Fprintf(f, "\n# Added by pgpush's pgcluster.\ninclude '%s'\n", confFile)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("append to postgresql.conf: %w", err)
	}
	return nil
}

// quoteSetting quotes v as a postgresql.conf string: the file's parser
// undoes backslash escapes and doubled single quotes.
func quoteSetting(v string) string {
	v = strings.ReplaceAll(v, `\`, `\\`)
	v = strings.ReplaceAll(v, `'`, `''`)
	return "'" + v + "'"
}
