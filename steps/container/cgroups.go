package container

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// RemoveCgroups removes what a container cut short (its host gone while
// it was held) leaves of its cgroups, killing the tasks left in them: lab
// hosts share the machine's cgroupfs, and a restore would refuse the ID
// while its cgroups exist. Tasks in a frozen cgroup cannot die until
// thawed.
func RemoveCgroups(id string) {
	freezer := filepath.Join("/sys/fs/cgroup/freezer", id)
	if _, err := os.Stat(freezer); err == nil {
		os.WriteFile(filepath.Join(freezer, "freezer.state"), []byte("THAWED"), 0o644)
		procs, _ := os.ReadFile(filepath.Join(freezer, "cgroup.procs"))
		for _, f := range strings.Fields(string(procs)) {
			if pid, err := strconv.Atoi(f); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*/" + id)
	dirs = append(dirs, "/sys/fs/cgroup/"+id)
	deadline := time.Now().Add(5 * time.Second)
	for _, d := range dirs {
		for {
			err := os.Remove(d)
			if err == nil || os.IsNotExist(err) || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
