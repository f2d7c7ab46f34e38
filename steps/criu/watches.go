package criu

import (
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// inotifyWatches lists the paths that pid's inotify instance on fd
// watches. CRIU saves the path it finds for each watch and opens it
// again on the target, so the restore fails where one is missing. The
// fdinfo gives each watch's device and file handle; the handle, opened
// on a mount of that device, names the path. A watch whose handle
// cannot be opened (no CAP_DAC_READ_SEARCH, a file gone) is left out.
func inotifyWatches(pid int, fd string) []string {
	var out []string
	mounts := map[uint64]string{} // device: a mount point of it, "" if none
	eachLine(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, fd), func(line string) {
		rest, ok := strings.CutPrefix(line, "inotify ")
		if !ok {
			return
		}
		kv := map[string]string{}
		for _, f := range strings.Fields(rest) {
			if k, v, ok := strings.Cut(f, ":"); ok {
				kv[k] = v
			}
		}
		dev, err1 := strconv.ParseUint(kv["sdev"], 16, 64)
		typ, err2 := strconv.ParseInt(kv["fhandle-type"], 16, 32)
		handle, err3 := hex.DecodeString(kv["f_handle"])
		if err1 != nil || err2 != nil || err3 != nil || len(handle) == 0 {
			return
		}
		mnt, ok := mounts[dev]
		if !ok {
			mnt = mountOf(pid, dev)
			mounts[dev] = mnt
		}
		if mnt == "" {
			return
		}
		if p := handlePath(mnt, unix.NewFileHandle(int32(typ), handle)); p != "" {
			out = append(out, p)
		}
	})
	return out
}

// mountOf finds where pid sees the device dev (as the kernel encodes
// it: major<<20 | minor) mounted, preferring a mount of its root, and
// returns that place as this host reaches it.
func mountOf(pid int, dev uint64) string {
	want := fmt.Sprintf("%d:%d", dev>>20, dev&0xfffff)
	var root, sub string // a mount of the device's root, of a subtree
	eachMount(pid, func(f []string) {
		if len(f) < 5 || f[2] != want {
			return
		}
		at := fmt.Sprintf("/proc/%d/root%s", pid, f[4])
		if f[3] == "/" && root == "" {
			root = at
		} else if sub == "" {
			sub = at
		}
	})
	if root != "" {
		return root
	}
	return sub
}

// handlePath opens handle on the file system mounted at mnt and returns
// the file's path.
func handlePath(mnt string, handle unix.FileHandle) string {
	mfd, err := unix.Open(mnt, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0) // not O_PATH: the kernel refuses it here
	if err != nil {
		return ""
	}
	defer unix.Close(mfd)
	fd, err := unix.OpenByHandleAt(mfd, handle, unix.O_PATH|unix.O_CLOEXEC)
	if err != nil {
		return ""
	}
	defer unix.Close(fd)
	p, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil || strings.HasSuffix(p, " (deleted)") {
		return ""
	}
	return p
}
