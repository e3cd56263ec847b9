package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// clockTicks is USER_HZ, the unit of CPU times in /proc/<pid>/stat. Go cannot
// call sysconf(_SC_CLK_TCK) without cgo; Linux fixes it at 100 on every
// architecture Go supports.
const clockTicks = 100

// procStat is what bench reads from /proc/<pid>/stat.
type procStat struct {
	ppid int
	// cpu is utime+stime in seconds; children is cutime+cstime, the CPU of
	// children the process has reaped.
	cpu, children float64
	comm          string
}

func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	// comm is in parentheses and may itself hold spaces and parentheses.
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return procStat{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[end+1:]))
	// f[0] is field 3 (state) of proc(5); field n is f[n-3].
	if len(f) < 15 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	num := func(i int) float64 {
		v, _ := strconv.ParseFloat(f[i], 64)
		return v
	}
	ppid, _ := strconv.Atoi(f[1])
	return procStat{
		ppid:     ppid,
		cpu:      (num(11) + num(12)) / clockTicks,
		children: (num(13) + num(14)) / clockTicks,
		comm:     string(b[open+1 : end]),
	}, nil
}

// procMemory is VmRSS and VmHWM (peak RSS) of a process, in bytes.
type procMemory struct {
	rss, hwm int64
}

func readProcMemory(pid int) (procMemory, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procMemory{}, err
	}
	defer f.Close()
	var m procMemory
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var dst *int64
		switch name {
		case "VmRSS":
			dst = &m.rss
		case "VmHWM":
			dst = &m.hwm
		default:
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		if err != nil {
			return procMemory{}, fmt.Errorf("/proc/%d/status %s: %w", pid, name, err)
		}
		*dst = kb << 10
	}
	if err := sc.Err(); err != nil {
		return procMemory{}, err
	}
	if m.rss == 0 && m.hwm == 0 {
		return procMemory{}, fmt.Errorf("/proc/%d/status has no VmRSS (a kernel thread or a zombie?)", pid)
	}
	return m, nil
}

// pgProcs is the CPU the cluster's processes had used at one moment.
type pgProcs struct {
	postmaster float64         // the postmaster's own
	reaped     float64         // that of its children that have exited
	live       map[int]float64 // that of its live children, by pid
}

func (p pgProcs) total() float64 {
	t := p.postmaster + p.reaped
	for _, cpu := range p.live {
		t += cpu
	}
	return t
}

// readPGProcs reads the CPU used so far by the cluster whose postmaster is
// pid: the postmaster's own, that of the children it has reaped (backends
// that have exited), and that of each live child.
func readPGProcs(postmaster int) (pgProcs, error) {
	pm, err := readProcStat(postmaster)
	if err != nil {
		return pgProcs{}, err
	}
	p := pgProcs{postmaster: pm.cpu, reaped: pm.children, live: make(map[int]float64)}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return pgProcs{}, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == postmaster {
			continue
		}
		st, err := readProcStat(pid)
		if err != nil || st.ppid != postmaster {
			continue // gone meanwhile, or not ours
		}
		p.live[pid] = st.cpu
	}
	return p, nil
}

// The roles cpuByRole reports besides PostgreSQL's own process kinds.
const (
	roleWriters    = "writers"           // the bench's writing sessions
	rolePgpush     = "pgpush's sessions" // the server's pool and listener
	roleFloor      = "floor's session"   // the floor's LISTEN connection
	roleSessions   = "other sessions"    // the bench's own queries, anyone else's
	roleExited     = "exited"            // processes that ended between the readings
	rolePostmaster = "postmaster"
	roleUnknown    = "other"
)

// roleOf names what a process of pg_stat_activity is there for.
func roleOf(backendType, applicationName string) string {
	switch {
	case strings.HasPrefix(backendType, "autovacuum"):
		return "autovacuum"
	case backendType != "client backend":
		return backendType
	case applicationName == writerApplicationName:
		return roleWriters
	case applicationName == floorApplicationName:
		return roleFloor
	case strings.HasPrefix(applicationName, "pgpush"):
		return rolePgpush
	default:
		return roleSessions
	}
}

// cpuByRole splits the CPU the cluster used between two readings by what
// its processes are (roles, by pid; a pid without one is "other"); the
// role of every process live at the second reading is there, if only with
// 0. A process that ended meanwhile is known only by what its parent
// reaped, so the CPU of all of those is "exited". The parts add up to the
// difference of the two totals.
func cpuByRole(before, after pgProcs, roles map[int]string) map[string]float64 {
	out := make(map[string]float64)
	add := func(role string, cpu float64) {
		if cpu != 0 {
			out[role] += cpu
		}
	}
	add(rolePostmaster, after.postmaster-before.postmaster)
	exited := after.reaped - before.reaped
	for pid, cpu := range before.live {
		if _, ok := after.live[pid]; !ok {
			exited -= cpu // counted before, and in reaped since
		}
	}
	add(roleExited, exited)
	// Every live process's role is there, if only with 0: what ran.
	for pid, cpu := range after.live {
		role := roles[pid]
		if role == "" {
			role = roleUnknown
		}
		out[role] += cpu - before.live[pid]
	}
	return out
}

// pgRoles reads the role of each of the cluster's processes that
// pg_stat_activity shows.
func pgRoles(ctx context.Context, pool *pgxpool.Pool) (map[int]string, error) {
	rows, err := pool.Query(ctx, `SELECT pid, coalesce(backend_type, ''), coalesce(application_name, '') FROM pg_stat_activity`)
	if err != nil {
		return nil, err
	}
	roles := make(map[int]string)
	var pid int
	var backendType, app string
	_, err = pgx.ForEachRow(rows, []any{&pid, &backendType, &app}, func() error {
		roles[pid] = roleOf(backendType, app)
		return nil
	})
	return roles, err
}

// findPostmaster returns the pid of the postmaster serving conn, if it runs
// on this machine and /proc shows it: from postmaster.pid in the data
// directory (readable by the server's OS user or root), else as the parent of
// this session's backend.
func findPostmaster(ctx context.Context, conn *pgx.Conn) (int, error) {
	if runtime.GOOS != "linux" {
		return 0, errors.New("needs Linux's /proc")
	}
	var dataDir string
	if err := conn.QueryRow(ctx, "SELECT current_setting('data_directory')").Scan(&dataDir); err == nil {
		if b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid")); err == nil {
			first, _, _ := strings.Cut(string(b), "\n")
			if pid, err := strconv.Atoi(strings.TrimSpace(first)); err == nil && isPostgres(pid) {
				return pid, nil
			}
		}
	}
	var backend int
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		return 0, err
	}
	st, err := readProcStat(backend)
	// In another PID namespace (a container) the number names some other
	// process, or none.
	if err != nil || !strings.HasPrefix(st.comm, "postgres") || !isPostgres(st.ppid) {
		return 0, errors.New("the database's processes are not visible in this machine's /proc")
	}
	return st.ppid, nil
}

func isPostgres(pid int) bool {
	st, err := readProcStat(pid)
	return err == nil && strings.HasPrefix(st.comm, "postgres")
}

// cpuTimes are the machine's CPU seconds since boot, from /proc/stat.
type cpuTimes struct {
	busy  float64 // user, nice, system, irq, softirq
	irq   float64 // irq and softirq: mostly loopback networking, in no process's times
	steal float64 // taken by the hypervisor
}

func machineCPU() (cpuTimes, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return cpuTimes{}, errors.New("/proc/stat: unexpected format")
	}
	var v [8]float64 // user nice system idle iowait irq softirq steal
	for i := range v {
		if v[i], err = strconv.ParseFloat(f[i+1], 64); err != nil {
			return cpuTimes{}, fmt.Errorf("/proc/stat: %w", err)
		}
		v[i] /= clockTicks
	}
	return cpuTimes{busy: v[0] + v[1] + v[2] + v[5] + v[6], irq: v[5] + v[6], steal: v[7]}, nil
}

// selfCPU returns this process's user+system CPU seconds.
func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// fileHeadroom is the descriptors a run (and its server) needs besides one
// per WebSocket: database connections, the listener, logs.
const fileHeadroom = 256

// raiseFileLimit makes room for n more descriptors than now, in this process
// and in the server it starts (a child inherits the limit once Setrlimit has
// been called). Root may raise the hard limit too.
func raiseFileLimit(need uint64) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("read the open-files limit: %w", err)
	}
	if lim.Cur >= need {
		return nil
	}
	want := lim
	want.Cur = need
	if want.Max < need {
		want.Max = need
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		return fmt.Errorf("the run needs %d open files, in this process and in the server, but the limit is %d (hard %d) "+
			"and raising it failed: %w; raise the hard limit (ulimit -Hn as root, a container's --ulimit nofile, "+
			"or CAP_SYS_RESOURCE) or open at most %d connections", need, lim.Cur, lim.Max, err, max(0, int(lim.Max)-fileHeadroom))
	}
	return nil
}

// machine describes the computer the run measures.
func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), OS: runtime.GOOS + "/" + runtime.GOARCH, Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if name, value, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(name) == "model name" {
				m.CPUModel = strings.TrimSpace(value)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				m.MemoryMiB = kb >> 10
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}
