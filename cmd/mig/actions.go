package main

import (
	"os"

	"github.com/mig-project/mig/engine/host"
	"github.com/mig-project/mig/steps/container"
	"github.com/mig-project/mig/steps/criu"
	"github.com/mig-project/mig/steps/netaddr"
)

// actions is the table of agent actions this binary offers, locally and on
// remote hosts.
func actions() host.Actions {
	criu.NoBreakpoints()
	self, _ := os.Executable()
	return host.Table(
		host.Builtin(),
		host.HoldActions(self),
		netaddr.Actions(),
		criu.Actions(criu.Drivers{"process": criu.Process{}, "container": container.NewDriver()}),
		container.Actions(),
	)
}
