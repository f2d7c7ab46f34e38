package criu

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/mig-project/mig/engine/host"
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
	// Free is what a new dump into Dir may write there: the file
	// system's space available to root, and the images of an earlier
	// dump, which it removes. -1: unknown.
	Free int64 `json:"free"`
}

func room(ctx context.Context, c *host.Call, req RoomRequest) (Room, error) {
	r := Room{Free: -1}
	if req.PID > 0 {
		r.Memory = MemoryBytes(tree(req.PID))
	}
	if req.Dir != "" {
		r.Free = freeFor(req.Dir)
	}
	return r, nil
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
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
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
	var fs unix.Statfs_t
	p := filepath.Clean(dir)
	for {
		err := unix.Statfs(p, &fs)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.ENOENT) || p == filepath.Dir(p) {
			return -1
		}
		p = filepath.Dir(p)
	}
	free := int64(fs.Bavail) * fs.Bsize
	old, _ := filepath.Glob(filepath.Join(dir, "*.img"))
	for _, f := range old {
		if fi, err := os.Lstat(f); err == nil && fi.Mode().IsRegular() {
			free += fi.Size()
		}
	}
	return free
}
