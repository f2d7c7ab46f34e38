package criu

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// heldLock is a lock of /proc/locks: its kind ("POSIX", "FLOCK",
// "OFDLCK"), its owner and the file's device and inode.
type heldLock struct {
	kind string
	pid  int
	dev  uint64
	ino  uint64
}

// fileLockProblems finds the file locks that pids hold. CRIU refuses to
// dump them ("Some file locks are hold by dumping tasks!") unless told to
// with file_locks, and the refusal would come after the freeze. Databases
// lock their files (InnoDB, SQLite, PostgreSQL), and so do many daemons
// their pid files.
func fileLockProblems(pids []int) []string {
	mine := map[int]bool{}
	for _, p := range pids {
		mine[p] = true
	}
	byPID := map[int][]heldLock{}
	var order []int
	for _, l := range readLocks() {
		if !mine[l.pid] {
			continue
		}
		if byPID[l.pid] == nil {
			order = append(order, l.pid)
		}
		byPID[l.pid] = append(byPID[l.pid], l)
	}
	var out []string
	for _, pid := range order {
		locks := byPID[pid]
		names := lockedFiles(pid, locks)
		what := "a file lock"
		if len(locks) > 1 {
			what = fmt.Sprintf("%d file locks", len(locks))
		}
		out = append(out, fmt.Sprintf("pid %d (%s) holds %s (%s), which CRIU dumps only when told to: set file_locks = true on the workload "+
			"(the restore takes them again, on the same files on the target)", pid, commOf(pid), what, strings.Join(names, ", ")))
	}
	return out
}

// readLocks parses /proc/locks, leaving out the waiters ("->" lines) and
// the locks of no process (OFD locks show pid -1).
func readLocks() []heldLock {
	b, err := os.ReadFile("/proc/locks")
	if err != nil {
		return nil
	}
	var out []heldLock
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		// 1: POSIX  ADVISORY  WRITE 1234 08:01:5678 0 EOF
		f := strings.Fields(sc.Text())
		if len(f) < 6 || f[1] == "->" {
			continue
		}
		pid, err := strconv.Atoi(f[4])
		if err != nil || pid <= 0 {
			continue
		}
		id := strings.Split(f[5], ":")
		if len(id) != 3 {
			continue
		}
		maj, err1 := strconv.ParseUint(id[0], 16, 32)
		min, err2 := strconv.ParseUint(id[1], 16, 32)
		ino, err3 := strconv.ParseUint(id[2], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			continue
		}
		out = append(out, heldLock{kind: f[1], pid: pid, dev: unix.Mkdev(uint32(maj), uint32(min)), ino: ino})
	}
	return out
}

// lockedFiles names the files of locks through pid's open files, "kind
// on path" (or the inode when pid has no such file open).
func lockedFiles(pid int, locks []heldLock) []string {
	type key struct{ dev, ino uint64 }
	paths := map[key]string{}
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, _ := os.ReadDir(fdDir)
	for _, e := range ents {
		var st unix.Stat_t
		p := filepath.Join(fdDir, e.Name())
		if unix.Stat(p, &st) != nil {
			continue
		}
		if target, err := os.Readlink(p); err == nil {
			paths[key{st.Dev, st.Ino}] = target
		}
	}
	var out []string
	for i, l := range locks {
		if i == 3 {
			out = append(out, "…")
			break
		}
		name, ok := paths[key{l.dev, l.ino}]
		if !ok {
			name = fmt.Sprintf("inode %d", l.ino)
		}
		out = append(out, strings.ToLower(l.kind)+" on "+name)
	}
	return out
}
