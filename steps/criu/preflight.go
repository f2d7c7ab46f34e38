package criu

import (
	"bufio"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Needs are the paths a restore needs on the target, found on the source:
// CRIU restores open files, mappings and bound unix sockets by path.
type Needs struct {
	Dirs  []string `json:"dirs,omitempty"`  // directories of bound unix sockets
	Files []string `json:"files,omitempty"` // open, mapped and watched files, cwd, executables
	// Locks are the file locks the restore takes again (file_locks).
	Locks []FileLock `json:"locks,omitempty"`
	// Written are the Files the workload may change: open for writing,
	// or mapped shared and writable. A copy of them is whole only once
	// the workload is frozen.
	Written []string `json:"written,omitempty"`
	// Sizes are the sizes of the regular Files whose size CRIU checks
	// ("File … has bad size"): all but those the workload only appends
	// to. Those it writes may still grow until the freeze.
	Sizes map[string]int64 `json:"sizes,omitempty"`
	// Modes are the Files' type and permission bits, which CRIU checks
	// of each file it reopens ("File … has bad mode").
	Modes map[string]uint32 `json:"modes,omitempty"`
	// Holders name a process that has each open file, for the messages.
	Holders map[string]Holder `json:"holders,omitempty"`
}

// Holder is a process of the workload that has a file open. Age is how
// long a child has run, in seconds (0 for the tree's root): a young one
// may be short-lived, as a database's background save is.
type Holder struct {
	PID  int     `json:"pid"`
	Comm string  `json:"comm"`
	Age  float64 `json:"age,omitempty"`
}

// shortLived is the age under which a child with a file the target lacks
// may be a task that ends soon.
const shortLived = 5 * 60

// ghostLimit is CRIU's default limit on an open deleted file it keeps
// in the images (--ghost-limit).
const ghostLimit = 1 << 20

// dumpableAnon are the anonymous-inode files CRIU 4.2 dumps (files.c):
// it refuses every other kind (io_uring, perf events, userfaultfd, …).
var dumpableAnon = map[string]bool{
	"anon_inode:[eventfd]":   true,
	"anon_inode:[eventpoll]": true,
	"anon_inode:inotify":     true,
	"anon_inode:[fanotify]":  true,
	"anon_inode:[signalfd]":  true,
	"anon_inode:[timerfd]":   true,
	"anon_inode:[pidfd]":     true,
	"anon_inode:bpf-map":     true,
}

// anonNames name the refused kinds that servers use.
var anonNames = map[string]string{
	"anon_inode:[perf_event]": "a perf event",
	"anon_inode:[io_uring]":   "an io_uring",
}

// unsupportedFD says what a file CRIU refuses is ("" for one it dumps),
// from its /proc fd link.
func unsupportedFD(link string) string {
	if !strings.HasPrefix(link, "anon_inode:") || dumpableAnon[link] {
		return ""
	}
	if name, ok := anonNames[link]; ok {
		return name
	}
	return "an anonymous file of kind " + strings.TrimPrefix(link, "anon_inode:")
}

// preflight finds, before anything is frozen, what would make CRIU fail
// after the freeze on this host (problems, each with its fix), and what
// the restore will need on the target.
func preflight(pids []int) ([]string, Needs) {
	var problems []string
	files, dirs, written := map[string]bool{}, map[string]bool{}, map[string]bool{}
	holders, up := map[string]Holder{}, uptime()
	sized := map[string]bool{}   // files CRIU checks the size of
	watched := map[string]bool{} // paths inotify watches
	mptcp := map[int][]string{}  // pid: its MPTCP sockets' fds
	problems = append(problems, sysvProblems(pids)...)
	problems = append(problems, externalUnixProblems(pids)...)
	if p := rlimitProblem(pids); p != "" {
		problems = append(problems, p)
	}
	for _, pid := range pids {
		comm := commOf(pid)
		for _, l := range []string{"cwd", "exe"} {
			if p, err := os.Readlink(fmt.Sprintf("/proc/%d/%s", pid, l)); err == nil && needed(p) {
				files[p] = true
				sized[p] = true
			}
		}
		fdDir := fmt.Sprintf("/proc/%d/fd", pid)
		eachFD(pid, func(fd, p string) {
			if what := unsupportedFD(p); what != "" {
				problems = append(problems, fmt.Sprintf("pid %d (%s) has %s open (fd %s), which CRIU cannot checkpoint; stop the service from using it, or move it cold (stop and start)", pid, comm, what, fd))
				return
			}
			if strings.HasPrefix(p, "socket:") && isMPTCP(filepath.Join(fdDir, fd)) {
				mptcp[pid] = append(mptcp[pid], fd)
				return
			}
			if p == "anon_inode:inotify" {
				for _, w := range inotifyWatches(pid, fd) {
					watched[w] = true
				}
				return
			}
			if strings.HasSuffix(p, " (deleted)") {
				var st unix.Stat_t
				if unix.Stat(filepath.Join(fdDir, fd), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size > ghostLimit {
					problems = append(problems, fmt.Sprintf("pid %d (%s) holds the deleted file %s (fd %s, %d bytes) open; CRIU copies deleted files only up to 1 MiB: close it (or stop writing to a deleted file) before the move", pid, comm, strings.TrimSuffix(p, " (deleted)"), fd, st.Size))
				}
				return
			}
			if needed(p) {
				files[p] = true
				if _, ok := holders[p]; !ok {
					holders[p] = holderOf(pid, comm, pid == pids[0], up)
				}
				flags, ok := fdFlags(pid, fd)
				if ok && flags&unix.O_ACCMODE != unix.O_RDONLY {
					written[p] = true
				}
				// CRIU leaves out the size of a file only appended to (a log).
				if !ok || flags&unix.O_ACCMODE != unix.O_WRONLY || flags&unix.O_APPEND == 0 {
					sized[p] = true
				}
			}
		})
		for _, m := range mappedFiles(pid) {
			files[m.path] = true
			sized[m.path] = true
			if m.sharedWrite {
				written[m.path] = true
			}
		}
	}
	for _, pid := range slices.Sorted(maps.Keys(mptcp)) {
		fds := mptcp[pid]
		what := "an MPTCP socket (fd " + fds[0] + ")"
		if len(fds) > 1 {
			what = fmt.Sprintf("%d MPTCP sockets (fds %s)", len(fds), strings.Join(fds, ", "))
		}
		problems = append(problems, fmt.Sprintf("pid %d (%s) has %s, which CRIU cannot checkpoint (`Unsupported proto 262`); "+
			"Go programs listen with MPTCP by default since Go 1.24: start it with GODEBUG=multipathtcp=0, or have it call SetMultipathTCP(false)", pid, commOf(pid), what))
	}
	for _, p := range boundUnixSockets(pids) {
		dirs[filepath.Dir(p)] = true
	}
	sizes, modes := map[string]int64{}, map[string]uint32{}
	for f := range files {
		var st unix.Stat_t
		if unix.Stat(f, &st) != nil {
			continue
		}
		modes[f] = st.Mode
		if st.Mode&unix.S_IFMT == unix.S_IFREG && sized[f] {
			sizes[f] = st.Size
		}
	}
	// CRIU opens a watched path again, but checks neither mode nor size.
	for w := range watched {
		if needed(w) {
			files[w] = true
		}
	}
	return problems, Needs{Dirs: sorted(dirs), Files: sorted(files), Written: sorted(written), Sizes: sizes, Modes: modes, Holders: holders}
}

// ContainerProblems is preflight's problems for a container's tasks, and,
// unless o.FileLocks, their file locks. (What the restore needs on the
// target is the container's bundle, which the driver checks.)
func ContainerProblems(pids []int, o Options) []string {
	problems, _ := preflight(pids)
	if !o.FileLocks {
		problems = append(problems, fileLockProblems(pids)...)
	}
	return problems
}

// isMPTCP says whether the socket at path (a /proc/PID/fd link) is an
// MPTCP one, by the protocol name the kernel gives sockets as an xattr.
func isMPTCP(path string) bool {
	buf := make([]byte, 32)
	n, err := unix.Getxattr(path, "system.sockprotoname", buf)
	return err == nil && strings.HasPrefix(string(buf[:n]), "MPTCP")
}

// fdFlags reads the open flags of pid's fd from its fdinfo (octal).
func fdFlags(pid int, fd string) (int, bool) {
	v, ok := fdinfoField(pid, fd, "flags")
	flags, err := strconv.ParseUint(v, 8, 32)
	return int(flags), ok && err == nil
}

// fdinfoField reads one "key:\tvalue" line of pid's fd's fdinfo.
func fdinfoField(pid int, fd, key string) (string, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, fd))
	if err != nil {
		return "", false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

// eachMount calls fn with the fields of each line of pid's mountinfo.
func eachMount(pid int, fn func(f []string)) {
	eachLine(fmt.Sprintf("/proc/%d/mountinfo", pid), func(line string) { fn(strings.Fields(line)) })
}

// needed says whether a path must exist on the target for the restore:
// real files (POSIX shared memory in /dev/shm included), not /proc, /sys
// or /dev nodes every host has.
func needed(p string) bool {
	if !strings.HasPrefix(p, "/") || strings.HasSuffix(p, " (deleted)") {
		return false
	}
	if strings.HasPrefix(p, "/dev/shm/") {
		return true // POSIX shared memory: a file of this host's tmpfs
	}
	for _, skip := range []string{"/proc/", "/sys/", "/dev/"} {
		if strings.HasPrefix(p, skip) {
			return false
		}
	}
	return p != "/"
}

func sorted(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func commOf(pid int) string {
	st, err := readStat(pid)
	if err != nil {
		return "?"
	}
	return st.comm
}

// mapped is a file that a process maps.
type mapped struct {
	path        string
	sharedWrite bool // a writable shared mapping: writes reach the file
}

// mappedFiles lists the files pid maps (shared libraries, data files).
func mappedFiles(pid int) []mapped {
	var out []mapped
	eachLine(fmt.Sprintf("/proc/%d/maps", pid), func(line string) {
		fs := strings.SplitN(line, " ", 6)
		if len(fs) < 6 {
			return
		}
		p := strings.TrimSpace(fs[5])
		if needed(p) && !strings.HasPrefix(p, "/SYSV") && !strings.HasPrefix(p, "/memfd:") {
			out = append(out, mapped{path: p, sharedWrite: strings.HasPrefix(fs[1], "rw") && strings.HasSuffix(fs[1], "s")})
		}
	})
	return out
}

// eachLine calls fn with each line of the file at path (nothing when it
// cannot be read: a process that went away).
func eachLine(path string, fn func(line string)) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fn(sc.Text())
	}
}

// boundUnixSockets lists the filesystem paths of the unix sockets the
// tree has bound (abstract ones need nothing on the target).
func boundUnixSockets(pids []int) []string {
	if len(pids) == 0 {
		return nil
	}
	inodes := map[string]bool{}
	for _, pid := range pids {
		for ino := range socketInodes(pid) {
			inodes[ino] = true
		}
	}
	var out []string
	eachLine(fmt.Sprintf("/proc/%d/net/unix", pids[0]), func(line string) {
		fs := strings.Fields(line)
		// Num RefCount Protocol Flags Type St Inode Path
		if len(fs) >= 8 && inodes[fs[6]] && strings.HasPrefix(fs[7], "/") {
			out = append(out, fs[7])
		}
	})
	return out
}

// sysvProblems: CRIU moves SysV IPC objects only with an IPC namespace of
// the workload's own; in the host's namespace, a shared memory mapping
// fails the dump after the freeze, and message queues would be left
// behind.
func sysvProblems(pids []int) []string {
	self, err := os.Readlink("/proc/self/ns/ipc")
	if err != nil {
		return nil
	}
	const fix = "CRIU moves SysV IPC only together with an IPC namespace of the workload's own: start the service in one (`unshare --ipc …`, or as a container), or move it cold (stop and start)"
	var out []string
	inTree := map[string]bool{}
	// A server's tasks usually share one segment (PostgreSQL's postmaster
	// and its children): one problem per set of segments, not per task.
	var sets []string
	tasks := map[string][]int{}
	for _, pid := range pids {
		inTree[strconv.Itoa(pid)] = true
		if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/ipc", pid)); err != nil || ns != self {
			continue
		}
		if ids := strings.Join(sysvMaps(pid), ", "); ids != "" {
			if tasks[ids] == nil {
				sets = append(sets, ids)
			}
			tasks[ids] = append(tasks[ids], pid)
		}
	}
	for _, ids := range sets {
		out = append(out, fmt.Sprintf("%s SysV shared memory attached (shmid %s) in the host's IPC namespace; %s", describeTasks(tasks[ids]), ids, fix))
	}
	if len(out) > 0 {
		return out
	}
	// Message queues last sent to or read by the tree.
	if f, err := os.Open("/proc/sysvipc/msg"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			// key msqid perms cbytes qnum lspid lrpid …
			if len(fs) >= 7 && (inTree[fs[5]] || inTree[fs[6]]) {
				if ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/ipc", pids[0])); ns == self {
					out = append(out, fmt.Sprintf("the workload uses the SysV message queue %s (key %s) in the host's IPC namespace, which would stay behind; %s", fs[1], fs[0], fix))
				}
			}
		}
	}
	return out
}

// describeTasks names tasks as the subject of a sentence: "pid 7 (nginx)
// has" or "pids 7, 8 and 9 (nginx) have", up to five pids.
func describeTasks(pids []int) string {
	if len(pids) == 1 {
		return fmt.Sprintf("pid %d (%s) has", pids[0], commOf(pids[0]))
	}
	var names, shown []string
	for i, pid := range pids {
		if c := commOf(pid); !slices.Contains(names, c) {
			names = append(names, c)
		}
		if i < 5 {
			shown = append(shown, strconv.Itoa(pid))
		}
	}
	list := strings.Join(shown[:len(shown)-1], ", ") + " and " + shown[len(shown)-1]
	if more := len(pids) - len(shown); more > 0 {
		list = fmt.Sprintf("%s and %d more", strings.Join(shown, ", "), more)
	}
	return fmt.Sprintf("%d tasks, pids %s (%s), have", len(pids), list, strings.Join(names, ", "))
}

// externalUnixProblems finds the unix stream sockets of the tree connected
// to a process outside it (php-fpm behind nginx, a database's socket):
// CRIU refuses them ("External socket is used") after the freeze.
func externalUnixProblems(pids []int) []string {
	if len(pids) == 0 {
		return nil
	}
	mine := map[uint32]int{} // socket inode: the pid that has it
	for _, pid := range pids {
		for ino := range socketInodes(pid) {
			if n, err := strconv.ParseUint(ino, 10, 32); err == nil {
				mine[uint32(n)] = pid
			}
		}
	}
	streams := unixStreams(pids[0], mine)
	if len(streams) == 0 {
		return nil
	}
	// A sock_diag dump can come back short (interrupted by sockets that
	// come and go, as on a busy host), and a connection its server has
	// not accepted yet has no peer inode: it is asked again, a few
	// milliseconds apart, until it has every socket wanted and their peers.
	// In the tree's network namespace, whatever this thread's is.
	ns, err := netns.GetFromPath(fmt.Sprintf("/proc/%d/ns/net", pids[0]))
	if err != nil {
		return nil
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil
	}
	defer h.Close()
	var socks map[uint32]*netlink.UnixDiagInfoResp
	missing := func(ino uint32) bool {
		sk := socks[ino]
		return sk == nil || sk.Peer == nil || *sk.Peer == 0 || socks[*sk.Peer] == nil
	}
	for try := range 10 {
		if try > 0 {
			time.Sleep(5 * time.Millisecond)
		}
		list, err := h.UnixSocketDiagInfo()
		socks = map[uint32]*netlink.UnixDiagInfoResp{}
		for _, sk := range list {
			socks[sk.DiagMsg.INode] = sk
		}
		if err == nil && !slices.ContainsFunc(streams, missing) {
			break
		}
	}
	var out []string
	for _, ino := range streams {
		sk := socks[ino]
		if sk == nil || sk.Peer == nil || *sk.Peer == 0 {
			continue
		}
		if _, in := mine[*sk.Peer]; in {
			continue
		}
		peer := fmt.Sprintf("unnamed socket %d", *sk.Peer)
		if p := socks[*sk.Peer]; p != nil && p.Name != nil {
			// netlink's value runs past the name: a path ends at its
			// first NUL; an abstract name starts with one (shown "@").
			name, abstract := strings.CutPrefix(*p.Name, "\x00")
			name, _, _ = strings.Cut(name, "\x00")
			if abstract {
				name = "@" + name
			}
			peer = name
		}
		pid := mine[ino]
		out = append(out, fmt.Sprintf("pid %d (%s) has a unix socket connected to %s, a process that does not move with it: "+
			"CRIU cannot checkpoint it (\"External socket is used\"), and the dump would fail after the freeze. "+
			"Move that process in the same tree or container, or have the workload connect after the move", pid, commOf(pid), peer))
	}
	return out
}

// unixStreams lists the inodes of mine that are connected unix stream or
// seqpacket sockets, from pid's /proc/net/unix.
func unixStreams(pid int, mine map[uint32]int) []uint32 {
	var out []uint32
	eachLine(fmt.Sprintf("/proc/%d/net/unix", pid), func(line string) {
		// Num RefCount Protocol Flags Type St Inode [Path]
		fs := strings.Fields(line)
		if len(fs) < 7 || fs[4] == "0002" || fs[5] != "03" {
			return // a header, a datagram socket, or not connected
		}
		if n, err := strconv.ParseUint(fs[6], 10, 32); err == nil {
			if _, ok := mine[uint32(n)]; ok {
				out = append(out, uint32(n))
			}
		}
	})
	return out
}

// sysvMaps lists the shmids pid has attached ("/SYSV<key> (deleted)"
// mappings, whose inode is the shmid).
func sysvMaps(pid int) []string {
	seen := map[string]bool{}
	var out []string
	eachLine(fmt.Sprintf("/proc/%d/maps", pid), func(line string) {
		fs := strings.Fields(line)
		if len(fs) >= 6 && strings.HasPrefix(fs[5], "/SYSV") && !seen[fs[4]] {
			seen[fs[4]] = true
			out = append(out, fs[4])
		}
	})
	return out
}

// rlimitProblem: CRIU reads every task's rlimits with prlimit(2), which
// needs CAP_SYS_RESOURCE for a task of another user. Without it the dump
// fails after the freeze (`Can't get rlimit 0`), so ask the kernel the
// same question now.
func rlimitProblem(pids []int) string {
	var refused []string
	for _, pid := range pids {
		var lim unix.Rlimit
		if err := unix.Prlimit(pid, unix.RLIMIT_CPU, nil, &lim); errors.Is(err, unix.EPERM) {
			refused = append(refused, fmt.Sprintf("pid %d (%s) as uid %s", pid, commOf(pid), uidOf(pid)))
		}
	}
	if len(refused) == 0 {
		return ""
	}
	return fmt.Sprintf("%d of the workload's %d tasks run as another user (%s) and this host's root lacks CAP_SYS_RESOURCE, "+
		"so CRIU cannot read their rlimits (it would fail with `Can't get rlimit 0` after freezing them); "+
		"run mig's agent with CAP_SYS_RESOURCE (check with `grep CapEff /proc/self/status` as root), or run the service as root",
		len(refused), len(pids), firstOf(refused, 3))
}

// firstOf lists up to most of items, and says how many more there are.
func firstOf(items []string, most int) string {
	if len(items) > most {
		items = append(items[:most:most], fmt.Sprintf("and %d more", len(items)-most))
	}
	return strings.Join(items, ", ")
}

func uidOf(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "?"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Uid:"); ok {
			if f := strings.Fields(v); len(f) > 0 {
				return f[0]
			}
		}
	}
	return "?"
}

// Missing lists, with their fix, the needed paths this host lacks.
func (n Needs) Missing() []string {
	var out []string
	for _, d := range n.Dirs {
		if st, err := os.Stat(d); err != nil || !st.IsDir() {
			out = append(out, fmt.Sprintf("the directory %s, where the workload has a unix socket bound, is missing (CRIU binds the socket there again); create it before the move (`mkdir -p %s`, with the owner and mode it has on the source)", d, d))
		}
	}
	var files, resized, shorter, remoded []string
	young := false // a missing file is a young child's
	written := map[string]bool{}
	for _, f := range n.Written {
		written[f] = true
	}
	for _, f := range n.Files {
		var st unix.Stat_t
		if err := unix.Stat(f, &st); err != nil {
			h, ok := n.Holders[f]
			switch {
			case !ok:
				files = append(files, f)
			case h.Age > 0:
				files = append(files, fmt.Sprintf("%s (open in pid %d, %s, a child that started %s ago)", f, h.PID, h.Comm, time.Duration(h.Age*float64(time.Second)).Round(time.Second)))
				young = young || h.Age < shortLived
			default:
				files = append(files, fmt.Sprintf("%s (open in pid %d, %s)", f, h.PID, h.Comm))
			}
			continue
		}
		if want, ok := n.Modes[f]; ok && st.Mode != want {
			remoded = append(remoded, fmt.Sprintf("%s (%s here, %s on the source)", f, modeString(st.Mode), modeString(want)))
		}
		want, ok := n.Sizes[f]
		switch {
		case !ok || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size == want:
		case !written[f]:
			resized = append(resized, fmt.Sprintf("%s (%d bytes here, %d on the source)", f, st.Size, want))
		case st.Size < want:
			// A file the workload writes may grow until the freeze; one
			// already shorter here is another file (or shared and
			// truncated since, rarely).
			shorter = append(shorter, fmt.Sprintf("%s (%d bytes here, %d on the source)", f, st.Size, want))
		}
	}
	if len(resized) > 0 {
		out = append(out, fmt.Sprintf("files the workload has open or mapped differ here: %s; CRIU restores only onto the same files (it checks their size), "+
			"so the restore would fail after the freeze: install the same versions here as on the source", firstOf(resized, 3)))
	}
	if len(shorter) > 0 {
		out = append(out, fmt.Sprintf("files the workload writes are shorter here than on the source: %s; CRIU reopens them at the same offset and checks their size, "+
			"so the restore would fail after the freeze: copy them in the pause (a `copy` step after the dump), or have the service open them for appending only (a shell's `>>`), as CRIU does not check the size of those", firstOf(shorter, 3)))
	}
	if len(remoded) > 0 {
		out = append(out, fmt.Sprintf("files the workload has open or mapped have another mode here: %s; CRIU restores only onto files of the same type and permissions, "+
			"so the restore would fail after the freeze: chmod them here as on the source", firstOf(remoded, 3)))
	}
	if len(files) > 0 {
		fix := "put them on this host (a `copy` step, or the same package/mount) before the move"
		if young {
			fix += "; a file of a child that runs for a while only (a database's background save) is gone once it has ended: move then, or copy its directory after the dump"
		}
		fix += jvmHint(files)
		out = append(out, fmt.Sprintf("files the workload has open, mapped or watched are missing (CRIU reopens them by path): %s; %s", firstOf(files, 5), fix))
	}
	return append(out, n.lockConflicts()...)
}

// modeString writes a stat mode's permissions in octal, with the type
// when it is not a regular file: "0600", "directory 0755".
func modeString(m uint32) string {
	perm := fmt.Sprintf("%04o", m&0o7777)
	switch m & unix.S_IFMT {
	case unix.S_IFREG:
		return perm
	case unix.S_IFDIR:
		return "directory " + perm
	}
	return fmt.Sprintf("file type %#o, %s", m&unix.S_IFMT, perm)
}

// clockTicks is USER_HZ, the unit of the start times in /proc.
const clockTicks = 100

// holderOf describes pid, with its age unless it is the tree's root;
// uptime is the host's, in seconds (0 when unknown).
func holderOf(pid int, comm string, root bool, uptime float64) Holder {
	h := Holder{PID: pid, Comm: comm}
	if start := startTime(pid); !root && uptime > 0 && start > 0 {
		h.Age = max(uptime-float64(start)/clockTicks, 0.001)
	}
	return h
}

// uptime is the seconds since this host booted, 0 when unknown.
func uptime() float64 {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	secs, _ := strconv.ParseFloat(f[0], 64)
	return secs
}
