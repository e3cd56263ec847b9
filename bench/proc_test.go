package bench

import (
	"maps"
	"testing"
)

func TestCPUByRole(t *testing.T) {
	before := pgProcs{postmaster: 1, reaped: 10, live: map[int]float64{1: 5, 2: 3, 3: 2}}
	// pid 3 exited having used 3.5 s in all, a process born and gone
	// meanwhile used 2.5, pid 4 is new, pid 2 idled.
	after := pgProcs{postmaster: 1.5, reaped: 16, live: map[int]float64{1: 7, 2: 3, 4: 1.25}}
	roles := map[int]string{1: roleWriters, 2: "walwriter", 3: roleWriters}
	got := cpuByRole(before, after, roles)
	want := map[string]float64{rolePostmaster: 0.5, roleExited: 4, roleWriters: 2, "walwriter": 0, roleUnknown: 1.25}
	if !maps.Equal(got, want) {
		t.Errorf("cpuByRole = %v, want %v", got, want)
	}
	var sum float64
	for _, cpu := range got {
		sum += cpu
	}
	if d := after.total() - before.total(); sum != d {
		t.Errorf("the roles add up to %v, the totals differ by %v", sum, d)
	}
}

func TestRoleOf(t *testing.T) {
	for _, c := range []struct{ backendType, app, want string }{
		{"autovacuum worker", "", "autovacuum"},
		{"autovacuum launcher", "", "autovacuum"},
		{"walwriter", "", "walwriter"},
		{"checkpointer", "", "checkpointer"},
		{"client backend", writerApplicationName, roleWriters},
		{"client backend", floorApplicationName, roleFloor},
		{"client backend", "pgpush", rolePgpush},
		{"client backend", "pgpush-listener", rolePgpush},
		{"client backend", "psql", roleSessions},
		{"client backend", "", roleSessions},
	} {
		if got := roleOf(c.backendType, c.app); got != c.want {
			t.Errorf("roleOf(%q, %q) = %q, want %q", c.backendType, c.app, got, c.want)
		}
	}
}
