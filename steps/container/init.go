// Package container moves runc containers with CRIU through libcontainer,
// in-process: mig never runs the runc binary. It creates, checkpoints and
// restores containers whose state lives under a runc state root, so a
// container started with `runc --root ROOT run -d` can be adopted.
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
// libcontainer re-executed (`<self> init`), or a detached lazy dump that
// this package started, and never returns then. Otherwise it returns at
// once. A binary that creates or restores containers must call it first
// thing in main, before flags or logging.
func Init() {
	if len(os.Args) > 1 && os.Args[1] == "init" && os.Getenv("_LIBCONTAINER_INITPIPE") != "" {
		libcontainer.Init()
	}
	if len(os.Args) == 3 && os.Args[1] == lazyDumpArg {
		os.Exit(runLazyDump(os.Args[2]))
	}
}
