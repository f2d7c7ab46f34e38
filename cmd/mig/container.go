package main

import "github.com/mig-project/mig/steps/container"

// containerInit turns this process into a container's init when
// libcontainer re-executed mig for that (`mig init` with libcontainer's
// pipes in the environment); it does not return then. main calls it
// before anything else, since the container's init must not start mig's
// logging, signals or goroutines.
func containerInit() { container.Init() }
