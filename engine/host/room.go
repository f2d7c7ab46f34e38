package host

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// FreeBytes is the room root has left in the file system of path (the
// blocks reserved for root included), or -1 when it cannot be told.
func FreeBytes(path string) int64 {
	var fs unix.Statfs_t
	if unix.Statfs(path, &fs) != nil {
		return -1
	}
	unit := fs.Frsize
	if unit <= 0 {
		unit = fs.Bsize
	}
	return int64(fs.Bfree) * unit
}

// roomFor refuses to write need bytes into dir, an existing directory,
// when its file system has less room left for root. A copy or an
// extraction that would fill the disk fails at once, not at its end: the
// workload is often frozen meanwhile. An unknown room is no refusal.
func roomFor(dir string, need int64, what string) error {
	free := FreeBytes(dir)
	if need <= 0 || free < 0 || free >= need {
		return nil
	}
	return fmt.Errorf("no room for %s: it needs %s, and the file system of %s has %s free; free some space there, or choose another destination",
		what, mib(need), dir, mib(free))
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
