package main

import (
	"fmt"
	"os"

	"github.com/mig-project/mig/engine/host"
	"github.com/mig-project/mig/steps/criu"
)

// cmdAgent serves one agent action on stdin and stdout, in the protocol
// described in engine/host/proto.go. mig starts it on remote hosts over SSH.
// `mig agent guard` is the guard process a dump or restore leaves on a
// host to hold new connections (criu.StartGuard).
func cmdAgent(c *cli, args []string) int {
	if len(args) == 1 && args[0] == "guard" {
		return criu.RunGuard(os.Stdin, os.Stdout, c.stderr)
	}
	if len(args) != 0 {
		fmt.Fprintln(c.stderr, "usage: mig agent (started by mig over SSH; speaks a binary protocol on stdin/stdout)")
		return exitUsage
	}
	if err := host.Serve(c.ctx, c.actions, os.Stdin, os.Stdout, c.log.Named("agent")); err != nil {
		c.log.Error("agent", "error", err)
		return exitFailed
	}
	return exitOK
}
