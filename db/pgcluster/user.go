package pgcluster

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// serverUser is the unprivileged OS account initdb and postgres run as when
// this process is root, because postgres refuses to run as root.
type serverUser struct {
	name     string
	uid, gid uint32
}

// lookupServerUser returns nil when this process is not root (the server then
// runs as this process's user), else the "postgres" account if it exists, else
// "nobody".
func lookupServerUser() (*serverUser, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	var errs []error
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		uid, err := strconv.ParseUint(u.Uid, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("user %s: uid %q: %w", name, u.Uid, err)
		}
		gid, err := strconv.ParseUint(u.Gid, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("user %s: gid %q: %w", name, u.Gid, err)
		}
		return &serverUser{name: name, uid: uint32(uid), gid: uint32(gid)}, nil
	}
	return nil, fmt.Errorf("running as root, but no unprivileged user to run postgres as: %v", errs)
}

// credential is what the child processes run with: nil (inherit) when u is
// nil. Supplementary groups are dropped, so the server gets exactly the
// account's uid and primary gid.
func (u *serverUser) credential() *syscall.Credential {
	if u == nil {
		return nil
	}
	return &syscall.Credential{Uid: u.uid, Gid: u.gid, Groups: []uint32{}}
}

// chown gives path to u; it does nothing when u is nil.
func (u *serverUser) chown(path string) error {
	if u == nil {
		return nil
	}
	if err := os.Chown(path, int(u.uid), int(u.gid)); err != nil {
		return fmt.Errorf("hand %s to user %s: %w", path, u.name, err)
	}
	return nil
}

// checkSearchable reports an error unless u may traverse dir and each of its
// ancestors. Without that, initdb fails later with a confusing "permission
// denied"; t.TempDir, for instance, makes mode 0700 folders owned by root.
func (u *serverUser) checkSearchable(dir string) error {
	if u == nil {
		return nil
	}
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("stat %s: %w", d, err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil // Not a Unix file system; let initdb report any problem.
		}
		perm := fi.Mode().Perm()
		var bit os.FileMode = 0o001
		switch {
		case st.Uid == u.uid:
			bit = 0o100
		case st.Gid == u.gid:
			bit = 0o010
		}
		if perm&bit == 0 {
			return fmt.Errorf("this process runs as root, so postgres runs as user %s, "+
				"who cannot enter %s (mode %v): choose an Options.Dir every user can enter, such as %s",
				u.name, d, perm, os.TempDir())
		}
		if parent := filepath.Dir(d); parent == d {
			return nil
		}
	}
}
