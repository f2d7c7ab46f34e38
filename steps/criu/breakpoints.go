package criu

import "os"

// NoBreakpoints makes the CRIU this process starts (go-criu's and
// libcontainer's `criu swrk` inherit its environment) leave a task's
// parasite or restorer code by tracing its last syscalls rather than at a
// hardware breakpoint. A ptrace breakpoint is a perf event bound to the
// task, and the kernel waits for an RCU grace period (10–15 ms here) when
// it accounts the first such event while none exists. A process dumped or
// restored for the first time paid that wait inside the pause; later dumps
// of the same process did not, as CRIU leaves the event on the task.
// CRIU_FAULT=130 is CRIU's own switch for this path (FI_NO_BREAKPOINTS,
// which its CI runs); a CRIU_FAULT already set is left alone.
func NoBreakpoints() {
	if _, set := os.LookupEnv("CRIU_FAULT"); !set {
		os.Setenv("CRIU_FAULT", "130")
	}
}
