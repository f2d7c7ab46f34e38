package main

import (
	"github.com/mig-project/mig/engine/host"
	"github.com/mig-project/mig/steps"
)

// actions is the table of agent actions this binary offers, locally and on
// remote hosts.
func actions() host.Actions {
	all := host.Actions{}
	for _, t := range []host.Actions{host.Builtin(), steps.NetActions()} {
		for name, fn := range t {
			all[name] = fn
		}
	}
	return all
}
