package main

import (
	"os"

	"github.com/mig-project/mig/engine/host"
	"github.com/mig-project/mig/steps"
	"github.com/mig-project/mig/steps/container"
	"github.com/mig-project/mig/steps/criu"
)

// actions is the table of agent actions this binary offers, locally and on
// remote hosts.
func actions() host.Actions {
	all := host.Actions{}
	self, _ := os.Executable()
	for _, t := range []host.Actions{
		host.Builtin(),
		host.HoldActions(self),
		steps.NetActions(),
		criu.Actions(criu.Drivers{"process": criu.Process{}, "container": container.NewDriver()}),
		container.Actions(),
	} {
		for name, fn := range t {
			all[name] = fn
		}
	}
	return all
}
