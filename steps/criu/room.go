package criu

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/mig-project/mig/engine/host"
	"golang.org/x/sys/unix"
)

// ActRoom measures, before a dump, what its pages need and what an images
// dir has.
var ActRoom = host.Action[RoomRequest, Room]{Name: "criu.room"}

// RoomRequest asks for the memory of the tree rooted at PID (0: none) and
// the room for images in Dir ("": none).
type RoomRequest struct {
	PID int    `json:"pid,omitempty"`
	Dir string `json:"dir,omitempty"`
}

// Room is what RoomRequest asked for, in bytes.
type Room struct {
	// Memory is about the least CRIU writes as pages for the tree.
	Memory int64 `json:"memory"`
	// Eager is what a lazy dump of the tree still writes in the freeze:
	// shared and locked memory, which CRIU does not serve lazily (at
	// most: locked shared memory counts twice).
	Eager int64 `json:"eager,omitempty"`
	// Free is what a new dump into Dir may write there: the file
	// system's space available to root, and the images of an earlier
	// dump, which it removes. -1: unknown.
	Free int64 `json:"free"`
	// InMemory: Dir's file system keeps its files in memory (tmpfs).
	InMemory bool `json:"in_memory,omitempty"`
	// Private is the private address space, resident or not, of the
	// tree's process that has the most (PrivatePID); LazyBytes what
	// CRIU's lazy dump allocates to track its pages, an iovec per page.
	Private    int64 `json:"private,omitempty"`
	PrivatePID int   `json:"private_pid,omitempty"`
	LazyBytes  int64 `json:"lazy_bytes,omitempty"`
	// Allocatable is the most one allocation may take on this host under
	// its overcommit policy; -1: no limit, or unknown.
	Allocatable int64 `json:"allocatable,omitempty"`
}

func room(ctx context.Context, c *host.Call, req RoomRequest) (Room, error) {
	r := Room{Free: -1}
	if req.PID > 0 {
		pids := tree(req.PID)
		r.Memory = MemoryBytes(pids)
		r.Eager = eagerBytes(pids)
		for _, pid := range pids {
			if b := privateBytes(pid); b > r.Private {
				r.Private, r.PrivatePID = b, pid
			}
		}
		r.LazyBytes = r.Private / int64(os.Getpagesize()) * iovecSize
		r.Allocatable = allocatable()
	}
	if req.Dir != "" {
		r.Free = freeFor(req.Dir)
		r.InMemory = inMemory(req.Dir)
	}
	return r, nil
}

// eagerBytes is Room.Eager for the processes pids.
func eagerBytes(pids []int) int64 {
	var kB int64
	for _, pid := range pids {
		f := rollup(pid)
		kB += f["Pss_Shmem"] + f["Locked"]
	}
	return kB << 10
}

// inMemory tells whether dir, or its nearest existing parent, is on a
// tmpfs or ramfs.
func inMemory(dir string) bool {
	p, ok := existingParent(dir)
	var fs unix.Statfs_t
	if !ok || unix.Statfs(p, &fs) != nil {
		return false
	}
	return fs.Type == unix.TMPFS_MAGIC || fs.Type == unix.RAMFS_MAGIC
}

// existingParent is dir, or its nearest parent that exists; false when
// one of them cannot be looked at.
func existingParent(dir string) (string, bool) {
	p := filepath.Clean(dir)
	for {
		_, err := os.Stat(p)
		if err == nil {
			return p, true
		}
		if !errors.Is(err, os.ErrNotExist) || p == filepath.Dir(p) {
			return "", false
		}
		p = filepath.Dir(p)
	}
}

// MemoryBytes is about the least CRIU writes as pages for the processes
// pids: their anonymous and shared memory, resident or swapped, a page
// shared between them counted once (proportionally, as smaps_rollup's Pss
// does).
func MemoryBytes(pids []int) int64 {
	var kB int64
	for _, pid := range pids {
		f := rollup(pid)
		anon, ok := f["Pss_Anon"]
		if !ok {
			anon = f["Anonymous"] // kernels before 5.8
		}
		kB += anon + f["Pss_Shmem"] + f["SwapPss"]
	}
	return kB << 10
}

// rollup reads /proc/PID/smaps_rollup's fields, in kB.
func rollup(pid int) map[string]int64 {
	return rollupFile("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
}

// rollupFile reads the "Name: N kB" fields of a /proc file, in kB.
func rollupFile(path string) map[string]int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	f := map[string]int64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		name, rest, ok := bytes.Cut(sc.Bytes(), []byte(":"))
		fields := bytes.Fields(rest)
		if !ok || len(fields) != 2 || string(fields[1]) != "kB" {
			continue
		}
		if v, err := strconv.ParseInt(string(fields[0]), 10, 64); err == nil {
			f[string(name)] = v
		}
	}
	return f
}

// freeFor is the room for a new dump's images in dir (which may not
// exist yet: its nearest existing parent's file system), or -1.
func freeFor(dir string) int64 {
	p, ok := existingParent(dir)
	if !ok {
		return -1
	}
	free := host.FreeBytes(p)
	if free < 0 {
		return -1
	}
	old, _ := filepath.Glob(filepath.Join(dir, "*.img"))
	for _, f := range old {
		if fi, err := os.Lstat(f); err == nil && fi.Mode().IsRegular() {
			free += fi.Size()
		}
	}
	return free
}

// iovecSize is sizeof(struct iovec) on 64-bit Linux.
const iovecSize = 16

// privateBytes is the size of pid's private mappings, as CRIU counts them
// for its page pipes: every private mapping below the task size, whatever
// its protection or residence.
func privateBytes(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/maps")
	if err != nil {
		return 0
	}
	var total int64
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		// 7f0000000000-7f0000021000 rw-p 00000000 00:00 0    [heap]
		f := bytes.Fields(sc.Bytes())
		if len(f) < 2 || len(f[1]) != 4 || f[1][3] != 'p' || len(f) >= 6 && string(f[5]) == "[vsyscall]" {
			continue
		}
		lo, hi, ok := bytes.Cut(f[0], []byte("-"))
		start, err1 := strconv.ParseUint(string(lo), 16, 64)
		end, err2 := strconv.ParseUint(string(hi), 16, 64)
		if !ok || err1 != nil || err2 != nil || end < start {
			continue
		}
		total += int64(end - start)
	}
	return total
}

// allocatable is the most one allocation may take here: the kernel's
// heuristic overcommit (mode 0) refuses one larger than RAM and swap
// together; strict accounting (mode 2) what is left of the commit limit;
// mode 1 refuses none (-1).
func allocatable() int64 {
	mode, err := os.ReadFile("/proc/sys/vm/overcommit_memory")
	if err != nil {
		return -1
	}
	m := rollupFile("/proc/meminfo")
	switch strings.TrimSpace(string(mode)) {
	case "0":
		return (m["MemTotal"] + m["SwapTotal"]) << 10
	case "2":
		return (m["CommitLimit"] - m["Committed_AS"]) << 10
	}
	return -1
}
