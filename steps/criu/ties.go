// What ties a process to the host it runs on, beyond what CRIU checks:
// a move cannot take it along, and the workload would die or run twice
// after a move that looked fine.

package criu

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// externalPipeProblems finds the pipes the tree shares with processes
// outside it: a service whose output goes to `| tee`, `| logger`, or a
// supervisor's log pipe (supervisord, runit's svlogd). CRIU moves the
// tree's end and restores the pipe without the other: the service's next
// write kills it with SIGPIPE on the target, after a move that looked
// fine. Found by the pipe inodes in /proc/*/fd, for stdout and stderr.
func externalPipeProblems(pids []int) []string {
	type end struct {
		pid int
		fd  string
	}
	mine := map[string][]end{} // "pipe:[inode]": the tree's fds on it
	inTree := map[int]bool{}
	for _, pid := range pids {
		inTree[pid] = true
		eachFD(pid, func(fd, link string) {
			// Output only: a pipe the service writes to. Other fds on
			// pipes are often inherited and never used.
			if (fd == "1" || fd == "2") && strings.HasPrefix(link, "pipe:[") {
				mine[link] = append(mine[link], end{pid, fd})
			}
		})
	}
	if len(mine) == 0 {
		return nil
	}
	outside := map[string]int{} // a pipe of the tree: a pid outside it that has it too
	for _, pid := range allPIDs() {
		if inTree[pid] {
			continue
		}
		eachFD(pid, func(_, link string) {
			if _, ok := mine[link]; ok && outside[link] == 0 {
				outside[link] = pid
			}
		})
	}
	var out []string
	for _, link := range slices.Sorted(maps.Keys(outside)) {
		e, other := mine[link][0], outside[link]
		what := "its stdout (fd 1)"
		if e.fd == "2" {
			what = "its stderr (fd 2)"
		}
		out = append(out, fmt.Sprintf("pid %d (%s) has %s on a pipe that pid %d (%s), outside the workload, holds too "+
			"(`| tee`, `| logger`, a supervisor's log pipe): CRIU moves only the workload's end, so on the target its next write would kill it "+
			"with SIGPIPE, after the move; send that output to a file or /dev/null instead, "+
			"or move the other process with it (one tree)", e.pid, commOf(e.pid), what, other, commOf(other)))
	}
	return out
}

// eachFD calls fn with each of pid's fds and where its link points.
func eachFD(pid int, fn func(fd, link string)) {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if link, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil {
			fn(e.Name(), link)
		}
	}
}

// supervisors are parents that start a service again when it exits.
var supervisors = map[string]bool{
	"supervisord": true, "runsv": true, "s6-supervise": true, "pm2": true, "monit": true,
	"daemon": true, "circusd": true, "god": true, "systemd": true,
}

// supervisorWarning says who may start the service again on the source
// once the move commits and kills it there: a supervising parent, or
// systemd for a process of a .service unit. Then the service runs on
// both hosts. "" when there is none to be seen.
func supervisorWarning(pid int) string {
	st, err := readStat(pid)
	if err != nil {
		return ""
	}
	parent := commOf(st.ppid)
	switch {
	case st.ppid == 1 && parent == "systemd":
		unit := serviceUnit(pid)
		if unit == "" {
			return ""
		}
		return fmt.Sprintf("pid %d (%s) runs in the systemd unit %s: when the move commits and kills it here, systemd starts it again if the unit restarts on failure "+
			"(`systemctl show -p Restart %s`), and the service then runs on both hosts; stop the unit from restarting first "+
			"(`systemctl edit %s`: Restart=no), or move it with the unit stopped", pid, st.comm, unit, unit, unit)
	case st.ppid > 1 && supervisors[parent]:
		return fmt.Sprintf("pid %d (%s) is a child of pid %d (%s), a supervisor: when the move commits and kills it here, %s may start it again, "+
			"and the service then runs on both hosts; stop %s from restarting it first", pid, st.comm, st.ppid, parent, parent, parent)
	}
	return ""
}

// serviceUnit is the systemd service unit of pid's cgroup ("" if none).
func serviceUnit(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		// 0::/system.slice/redis-server.service
		for _, part := range strings.Split(line, "/") {
			if strings.HasSuffix(part, ".service") {
				return part
			}
		}
	}
	return ""
}

// mountNSProblem: a task in a mount namespace other than this host's (a
// systemd service with PrivateTmp=, ProtectSystem= or PrivateDevices=,
// or one started under `unshare -m`) cannot be dumped as a process: CRIU
// would have to move its mounts, and fails after the freeze (`Can't
// lookup mount=… for fd=0`).
func mountNSProblem(pids []int) string {
	self, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		return ""
	}
	for _, pid := range pids {
		if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid)); err == nil && ns != self {
			return fmt.Sprintf("pid %d (%s) runs in a mount namespace of its own (%s, this host's is %s), whose mounts CRIU would have to move; "+
				"it would fail after the freeze. Start the service without one (systemd: PrivateTmp=, ProtectSystem=, ProtectHome=, PrivateDevices= off), "+
				"or run it as a container", pid, commOf(pid), ns, self)
		}
	}
	return ""
}

// foreignMountProblems finds files the tree has open on a mount that is
// not in its mount namespace: descriptors inherited from a process of
// another namespace (`nsenter`, `docker exec`, a background `mig lab exec
// … &` pass theirs on). CRIU looks each file's mount up and fails the
// dump (`Can't lookup mount=24 for fd=10 path=/dev/null`).
func foreignMountProblems(pids []int) []string {
	var out []string
	for _, pid := range pids {
		mounts := map[string]bool{}
		eachMount(pid, func(f []string) {
			if len(f) > 0 {
				mounts[f[0]] = true
			}
		})
		if len(mounts) == 0 {
			continue
		}
		var fds []string
		eachFD(pid, func(fd, link string) {
			// Sockets, pipes, anonymous inodes and memfds live on
			// kernel-internal mounts that mountinfo never lists.
			if !strings.HasPrefix(link, "/") || strings.HasPrefix(link, "/memfd:") {
				return
			}
			if id, ok := fdinfoField(pid, fd, "mnt_id"); ok && !mounts[id] {
				fds = append(fds, fmt.Sprintf("fd %s (%s)", fd, link))
			}
		})
		if len(fds) > 0 {
			out = append(out, fmt.Sprintf("pid %d (%s) has %s open from a mount outside its mount namespace, inherited from a process of another namespace "+
				"(`nsenter`, `docker exec`, a background `mig lab exec … &`): CRIU cannot dump it (`Can't lookup mount`); "+
				"start the service with only its own files open (`mig lab start`, or close the rest, as `exec 10>&-` does)", pid, commOf(pid), firstOf(fds, 3)))
		}
	}
	return out
}
