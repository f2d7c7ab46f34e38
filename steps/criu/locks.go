package criu

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// heldLock is a lock of /proc/locks: its kind ("POSIX", "FLOCK",
// "OFDLCK"), its owner, the file's device and inode, and its range.
type heldLock struct {
	kind       string
	pid        int
	dev        uint64
	ino        uint64
	write      bool
	start, end int64 // end -1: to the end of the file
}

// FileLock is a lock a workload holds, which its restore takes again.
type FileLock struct {
	Path  string `json:"path"`
	Kind  string `json:"kind"` // POSIX, FLOCK or OFDLCK, as /proc/locks says
	Write bool   `json:"write,omitempty"`
	Start int64  `json:"start,omitempty"`
	End   int64  `json:"end"`             // -1: to the end of the file
	PID   int    `json:"pid,omitempty"`   // the holder, on the source
	Inode uint64 `json:"inode,omitempty"` // the file's, on the source
}

// treeLocks lists the file locks pids hold, with their files' paths
// through the tree's open files ("" for a file none has open).
func treeLocks(pids []int) []FileLock {
	mine := map[int]bool{}
	for _, p := range pids {
		mine[p] = true
	}
	open := map[int]map[inodeKey]string{}
	var out []FileLock
	for _, l := range readLocks() {
		if !mine[l.pid] {
			continue
		}
		// The holder's own descriptor, or, as CRIU looks, another
		// task's of the tree (a child's, inherited).
		var path string
		for _, p := range append([]int{l.pid}, pids...) {
			if open[p] == nil {
				open[p] = openFiles(p)
			}
			if path = open[p][inodeKey{l.dev, l.ino}]; path != "" {
				break
			}
		}
		out = append(out, FileLock{Path: path, Kind: l.kind, Write: l.write, Start: l.start, End: l.end, PID: l.pid, Inode: l.ino})
	}
	return out
}

// heldLocks are the locks pids hold that their restore takes again: CRIU
// restores a lock through an open file.
func heldLocks(pids []int) []FileLock {
	return slices.DeleteFunc(treeLocks(pids), func(l FileLock) bool { return l.Path == "" })
}

// lockConflicts finds, on the target, the locks a restore would wait for:
// CRIU takes the workload's locks again with F_SETLKW and flock(2), which
// wait while another process holds a conflicting lock, and the workload
// stays frozen meanwhile. When the hosts share the files (NFS, a shared
// volume, a lab), that process is the frozen source itself.
func (n Needs) lockConflicts() []string {
	var out []string
	var here []heldLock
	for _, l := range n.Locks {
		var holder string
		switch l.Kind {
		case "FLOCK":
			var st unix.Stat_t
			if unix.Stat(l.Path, &st) != nil {
				continue
			}
			if here == nil {
				here = readLocks()
			}
			for _, h := range here {
				if h.kind == "FLOCK" && h.dev == st.Dev && h.ino == st.Ino && (l.Write || h.write) {
					holder = fmt.Sprintf("pid %d as this host sees it", h.pid)
				}
			}
			if holder == "" && flockHeld(l) {
				// /proc/locks shows only this pid namespace's holders.
				holder = "a process this host does not see"
			}
		default:
			holder = posixHolder(l)
		}
		if holder == "" {
			continue
		}
		out = append(out, fmt.Sprintf("%s is locked here already (a %s lock, held by %s): the restore would take "+
			"the workload's %s lock on it again and wait, with the workload frozen, until that lock goes. When the hosts share "+
			"this storage, the holder is the frozen source, which keeps its locks until the move commits: CRIU cannot move file "+
			"locks across storage both hosts see. Stop the service and start it on the target, or keep its files on each host's own "+
			"disk and copy them in the pause (workflows/database.hcl)", l.Path, strings.ToLower(l.Kind), holder, strings.ToLower(l.Kind)))
	}
	return out
}

// flockHeld says whether a flock conflicting with l is held on l's file,
// by taking one without waiting and letting it go at once: the only test
// that sees a holder in another pid namespace (a lab host, a container)
// or, through NFS, on another host.
func flockHeld(l FileLock) bool {
	fd, err := unix.Open(l.Path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	how := unix.LOCK_SH
	if l.Write {
		how = unix.LOCK_EX
	}
	if err := unix.Flock(fd, how|unix.LOCK_NB); err != nil {
		return errors.Is(err, unix.EWOULDBLOCK)
	}
	unix.Flock(fd, unix.LOCK_UN)
	return false
}

// posixHolder says who holds a lock on l's file that conflicts with l
// ("" when none), by F_OFD_GETLK, which sees POSIX and OFD locks, those
// of other hosts on NFS included.
func posixHolder(l FileLock) string {
	fd, err := unix.Open(l.Path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return ""
	}
	defer unix.Close(fd)
	q := unix.Flock_t{Type: unix.F_RDLCK, Start: l.Start}
	if l.Write {
		q.Type = unix.F_WRLCK
	}
	if l.End >= 0 {
		q.Len = l.End - l.Start + 1
	}
	if unix.FcntlFlock(uintptr(fd), unix.F_OFD_GETLK, &q) != nil || q.Type == unix.F_UNLCK {
		return ""
	}
	if q.Pid > 0 {
		return fmt.Sprintf("pid %d as this host sees it", q.Pid)
	}
	return "another process"
}

// fileLockProblems finds the file locks that pids hold. CRIU refuses to
// dump them ("Some file locks are hold by dumping tasks!") unless told to
// with file_locks, and the refusal would come after the freeze. Databases
// lock their files (InnoDB, SQLite, PostgreSQL), and so do many daemons
// their pid files.
func fileLockProblems(pids []int) []string {
	byPID := map[int][]string{}
	var order []int
	for _, l := range treeLocks(pids) {
		if l.Path == "" && l.Kind != "POSIX" {
			// Held through a mapping only (a JVM's perf data file):
			// CRIU skips a flock or OFD lock it finds no descriptor
			// for, and the restored copy goes without it.
			continue
		}
		if byPID[l.PID] == nil {
			order = append(order, l.PID)
		}
		name := l.Path
		if name == "" {
			name = fmt.Sprintf("inode %d", l.Inode)
		}
		byPID[l.PID] = append(byPID[l.PID], strings.ToLower(l.Kind)+" on "+name)
	}
	var out []string
	for _, pid := range order {
		names := byPID[pid]
		what := "a file lock"
		if len(names) > 1 {
			what = fmt.Sprintf("%d file locks", len(names))
		}
		if len(names) > 3 {
			names = append(names[:3], "…")
		}
		out = append(out, fmt.Sprintf("pid %d (%s) holds %s (%s), which CRIU dumps only when told to: set file_locks = true on the workload "+
			"(the restore takes them again, on the same files on the target)", pid, commOf(pid), what, strings.Join(names, ", ")))
	}
	return out
}

// jvmHint is the fix for a JVM's performance data file when one of
// paths names it, else "". A JVM maps /tmp/hsperfdata_USER/PID, which a
// target's /tmp lacks.
func jvmHint(paths []string) string {
	for _, p := range paths {
		if strings.Contains(p, "/hsperfdata_") {
			return "; /tmp/hsperfdata_*/ is a JVM's performance data, which it maps: " +
				"start the JVM with -XX:-UsePerfData (or -XX:+PerfDisableSharedMem) and it has none"
		}
	}
	return ""
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
		l := heldLock{kind: f[1], pid: pid, dev: unix.Mkdev(uint32(maj), uint32(min)), ino: ino, write: f[3] == "WRITE", end: -1}
		if len(f) >= 8 {
			l.start, _ = strconv.ParseInt(f[6], 10, 64)
			if f[7] != "EOF" {
				l.end, _ = strconv.ParseInt(f[7], 10, 64)
			}
		}
		out = append(out, l)
	}
	return out
}

type inodeKey struct{ dev, ino uint64 }

// openFiles maps the files pid has open to their paths.
func openFiles(pid int) map[inodeKey]string {
	paths := map[inodeKey]string{}
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, _ := os.ReadDir(fdDir)
	for _, e := range ents {
		var st unix.Stat_t
		p := filepath.Join(fdDir, e.Name())
		if unix.Stat(p, &st) != nil {
			continue
		}
		if target, err := os.Readlink(p); err == nil {
			paths[inodeKey{st.Dev, st.Ino}] = target
		}
	}
	return paths
}
