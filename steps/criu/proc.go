package criu

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// stat is what mig reads from /proc/PID/stat.
type stat struct {
	pid, ppid, sid, ttyNr int
	state                 byte
	flags                 uint64
	comm                  string
}

const pfKthread = 0x00200000

func readStat(pid int) (stat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return stat{}, err
	}
	s := string(b)
	open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || close < open {
		return stat{}, fmt.Errorf("pid %d: bad stat", pid)
	}
	f := strings.Fields(s[close+1:])
	if len(f) < 7 {
		return stat{}, fmt.Errorf("pid %d: short stat", pid)
	}
	st := stat{pid: pid, comm: s[open+1 : close], state: f[0][0]}
	st.ppid, _ = strconv.Atoi(f[1])
	st.sid, _ = strconv.Atoi(f[3])
	st.ttyNr, _ = strconv.Atoi(f[4])
	st.flags, _ = strconv.ParseUint(f[6], 10, 64)
	return st, nil
}

func cmdline(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

func allPIDs() []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)
	return pids
}

// tree returns root and all its descendants, root first. It reads each
// thread's children list, as CRIU does, so that its cost grows with the
// tree and not with the host's processes: a dump calls it in the pause.
func tree(root int) []int {
	if !hasChildren() {
		return treeByScan(root)
	}
	out := []int{root}
	seen := map[int]bool{root: true}
	for i := 0; i < len(out); i++ {
		for _, kid := range children(out[i]) {
			if !seen[kid] {
				seen[kid] = true
				out = append(out, kid)
			}
		}
	}
	return out
}

// children are the processes whose parent is one of pid's threads.
func children(pid int) []int {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	var out []int
	for _, e := range ents {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, e.Name()))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if kid, err := strconv.Atoi(f); err == nil {
				out = append(out, kid)
			}
		}
	}
	sort.Ints(out)
	return out
}

// hasChildren says whether the kernel lists children in /proc
// (CONFIG_PROC_CHILDREN, which CRIU needs too).
var hasChildren = sync.OnceValue(func() bool {
	_, err := os.Stat(fmt.Sprintf("/proc/self/task/%d/children", os.Getpid()))
	return err == nil
})

// treeByScan is tree from every process's parent.
func treeByScan(root int) []int {
	children := map[int][]int{}
	for _, pid := range allPIDs() {
		if st, err := readStat(pid); err == nil {
			children[st.ppid] = append(children[st.ppid], pid)
		}
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// tasks returns the thread ids of pids, each process's own id first.
func tasks(pids []int) []int {
	var out []int
	for _, pid := range pids {
		out = append(out, pid)
		ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		for _, e := range ents {
			if tid, err := strconv.Atoi(e.Name()); err == nil && tid != pid {
				out = append(out, tid)
			}
		}
	}
	return out
}

// startTimes returns the start times of pids, 0 for one that is gone.
func startTimes(pids []int) []uint64 {
	out := make([]uint64, len(pids))
	for i, p := range pids {
		out[i] = startTime(p)
	}
	return out
}

// sameTask says whether pid is still the process that started at start;
// an unknown start (0, a record from before starts were kept) matches.
func sameTask(pid int, start uint64) bool {
	if start == 0 {
		return true
	}
	return startTime(pid) == start
}

// sameTasks keeps the pids that are still the processes of starts (all of
// them when starts is missing).
func sameTasks(pids []int, starts []uint64) []int {
	if len(starts) != len(pids) {
		return pids
	}
	var out []int
	for i, p := range pids {
		if sameTask(p, starts[i]) {
			out = append(out, p)
		}
	}
	return out
}

// alive says whether pid exists and is not a zombie.
func alive(pid int) bool {
	st, err := readStat(pid)
	return err == nil && st.state != 'Z' && st.state != 'X'
}

// waitGone waits until none of pids is alive.
func waitGone(ctx context.Context, pids []int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		var left []int
		for _, p := range pids {
			if alive(p) {
				left = append(left, p)
			}
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pids %v still alive after %s", left, limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// SignalAll sends sig to every pid that is still there.
func SignalAll(pids []int, sig syscall.Signal) error {
	var first error
	for _, p := range pids {
		if err := syscall.Kill(p, sig); err != nil && err != syscall.ESRCH && first == nil {
			first = fmt.Errorf("signal %d to pid %d: %w", sig, p, err)
		}
	}
	return first
}

// socketFDs lists the descriptors of pid that are sockets.
func socketFDs(pid int) []int {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, _ := os.ReadDir(dir)
	var out []int
	for _, e := range ents {
		if l, err := os.Readlink(dir + "/" + e.Name()); err == nil && strings.HasPrefix(l, "socket:") {
			if n, err := strconv.Atoi(e.Name()); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// socketInodes returns the socket inodes open in pid.
func socketInodes(pid int) map[string]bool {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, _ := os.ReadDir(dir)
	out := map[string]bool{}
	for _, e := range ents {
		l, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			out[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	return out
}

// listening returns the TCP ports in LISTEN state in the network namespace
// of pid (0: this process's), by the inode of each listening socket.
func listening(pid int) map[string]int {
	socks, _ := tcpSockets(pid, 1<<tcpListen)
	out := map[string]int{}
	for _, s := range socks {
		out[s.Inode] = int(s.Local.Port())
	}
	return out
}

// boundListeners returns the tree's TCP listeners bound to one address,
// not a wildcard nor loopback.
func boundListeners(pids []int) []netip.AddrPort {
	if len(pids) == 0 {
		return nil
	}
	socks, _ := tcpSockets(pids[0], 1<<tcpListen)
	mine := map[string]bool{}
	for _, p := range pids {
		for ino := range socketInodes(p) {
			mine[ino] = true
		}
	}
	var out []netip.AddrPort
	for _, s := range socks {
		if a := s.Local.Addr(); mine[s.Inode] && !a.IsUnspecified() && !a.IsLoopback() {
			out = append(out, s.Local)
		}
	}
	return out
}

// listenPorts returns the TCP ports the tree listens on.
func listenPorts(pids []int) []int {
	if len(pids) == 0 {
		return nil
	}
	return portsOf(pids, listening(pids[0]))
}

// portsOf returns, sorted, the ports of the sockets of pids among socks,
// a port by socket inode.
func portsOf(pids []int, socks map[string]int) []int {
	seen := map[int]bool{}
	var ports []int
	for _, p := range pids {
		for ino := range socketInodes(p) {
			if port, ok := socks[ino]; ok && !seen[port] {
				seen[port] = true
				ports = append(ports, port)
			}
		}
	}
	sort.Ints(ports)
	return ports
}

// udpServerPorts returns the local ports of the unconnected UDP sockets
// of pids (a server's; a connected one is a client's, on a port of its
// own), sorted. pids share the network namespace of pids[0].
func udpServerPorts(pids []int) []int {
	if len(pids) == 0 {
		return nil
	}
	return udpServerPortsIn(pids[0], pids)
}

// udpServerPortsIn is udpServerPorts with the network namespace of nsPID
// (0: this thread's).
func udpServerPortsIn(nsPID int, pids []int) []int {
	socks, _ := udpSockets(nsPID)
	bound := map[string]int{}
	for _, s := range socks {
		if s.Remote.Port() == 0 && s.Local.Port() != 0 {
			bound[s.Inode] = int(s.Local.Port())
		}
	}
	return portsOf(pids, bound)
}

// ancestors returns pid's ancestors, nearest first.
func ancestors(pid int) []int {
	var out []int
	for pid > 1 {
		st, err := readStat(pid)
		if err != nil {
			break
		}
		out = append(out, st.ppid)
		pid = st.ppid
	}
	return out
}

// startTime is pid's start time in clock ticks since boot, 0 when pid is
// gone; with the pid, it names one process even after pids wrap.
func startTime(pid int) uint64 {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 20 {
		return 0
	}
	t, _ := strconv.ParseUint(f[19], 10, 64)
	return t
}
