// Package container moves runc containers with CRIU through libcontainer,
// in-process: mig never runs the runc binary. It creates, checkpoints and
// restores containers whose state lives under a runc state root, so a
// container started with `runc --root ROOT run -d` can be adopted.
//
// Driver is the criu.Driver of `container` workloads. What it assumes:
//   - Bundle: the bundle (config.json and rootfs) must already be on the
//     target, at the workload's `bundle` path or else at the source's
//     path (recorded in the images). CheckTarget checks that it is there
//     and that the restore ID and its cgroups are free. A workflow may
//     copy the bundle first with the copy step.
//   - Network: the driver creates no namespace, veth or address. A
//     container on the host network uses the target host's; one whose
//     config.json joins a network namespace by path needs that namespace,
//     with the service IP, on the target (the lab or the workflow's
//     move_ip step sets it up). tcp_established needs the same IP there.
//   - cgroups: the cgroupfs driver (there may be no systemd) and CRIU's
//     "soft" cgroup mode, which works with cgroup v1, hybrid and v2
//     hierarchies ("strict" fails on restore into the cgroups libcontainer
//     has just created). Hosts that share a cgroupfs (lab hosts on one
//     machine) need distinct container IDs: set restore_id.
//   - CRIU: the binary criu.Find chose, put first in PATH as `criu` for
//     libcontainer, with CRIU options (the nftables network lock,
//     leave-stopped) in a config file named by CRIU_CONFIG_FILE.
package container

import (
	"os"

	"github.com/opencontainers/runc/libcontainer"

	// libcontainer's container init needs the nsenter constructor (it runs
	// before the Go runtime) and the device-rule code.
	_ "github.com/opencontainers/cgroups/devices"
	_ "github.com/opencontainers/runc/libcontainer/nsenter"
)

// Init runs libcontainer's container init when this process is one that
// libcontainer re-executed (`<self> init`), or a detached lazy dump or a
// stdio keeper that this package started, and never returns then. Otherwise it returns at
// once. A binary that creates or restores containers must call it first
// thing in main, before flags or logging.
func Init() {
	if len(os.Args) > 1 && os.Args[1] == "init" && os.Getenv("_LIBCONTAINER_INITPIPE") != "" {
		libcontainer.Init()
	}
	if len(os.Args) == 3 && os.Args[1] == lazyDumpArg {
		os.Exit(runLazyDump(os.Args[2]))
	}
	if len(os.Args) == 2 && os.Args[1] == stdioKeeperArg {
		os.Exit(runStdioKeeper())
	}
}
