package host

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// roomFor refuses to write need bytes into dir, an existing directory,
// when its file system has less room left for root. A copy or an
// extraction that would fill the disk fails at once, not at its end: the
// workload is often frozen meanwhile. An unknown room is no refusal.
func roomFor(dir string, need int64, what string) error {
	var fs unix.Statfs_t
	if need <= 0 || unix.Statfs(dir, &fs) != nil {
		return nil
	}
	unit := fs.Frsize
	if unit <= 0 {
		unit = fs.Bsize
	}
	free := int64(fs.Bfree) * unit
	if free >= need {
		return nil
	}
	return fmt.Errorf("no room for %s: it needs %s, and the file system of %s has %s free; free some space there, or choose another destination",
		what, mib(need), dir, mib(free))
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
