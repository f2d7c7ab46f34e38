package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/mig-project/mig/engine/host"
	"github.com/mig-project/mig/steps/criu"
)

// cmdAgent serves one agent action on stdin and stdout, in the protocol
// described in engine/host/proto.go. mig starts it on remote hosts over SSH.
// `mig agent guard` is the guard process a dump or restore leaves on a
// host to hold new connections (criu.StartGuard).
func cmdAgent(c *cli, args []string) int {
	if len(args) == 1 && args[0] == "guard" {
		nameProcess("mig-guard")
		return criu.RunGuard(os.Stdin, os.Stdout, c.stderr)
	}
	// Started from an open file (/proc/self/fd/3), the agent would show
	// in ps and top as "3".
	nameProcess("mig-agent")
	if len(args) != 0 {
		fmt.Fprintln(c.stderr, "usage: mig agent (started by mig over SSH; speaks a binary protocol on stdin/stdout)")
		return exitUsage
	}
	// A session that ends under a running action closes the pipes: its
	// writes then fail with EPIPE instead of killing the agent before the
	// action has undone its partial work (a receive's partial file).
	signal.Ignore(syscall.SIGPIPE)
	if err := host.Serve(c.ctx, c.actions, os.Stdin, os.Stdout, c.log.Named("agent")); err != nil {
		c.log.Error("agent", "error", err)
		return exitFailed
	}
	return exitOK
}

// cmdHoldWatch is the detached watcher of a run's hold lease on this host
// (see engine/host/hold.go). The hold.* actions start it with fd 3 open; it
// closes fd 3 once it watches. It ignores SIGHUP and SIGINT (it outlives
// the session that started it) and stops only when the run releases the
// lease, or after acting on its expiry.
func cmdHoldWatch(c *cli, args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(c.stderr, "usage: mig hold-watch RUN (started by mig)")
		return exitUsage
	}
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGPIPE)
	ready := func() {
		if f := os.NewFile(3, "ready"); f != nil {
			f.Write([]byte{1})
			f.Close()
		}
	}
	if err := host.Watch(context.Background(), c.actions, args[0], ready, c.log.Named("hold-watch")); err != nil {
		c.log.Error("hold-watch", "run", args[0], "error", err)
		return exitFailed
	}
	return exitOK
}

// nameProcess sets the name ps and top show for this process (at most 15
// bytes); a failure only leaves the old one.
func nameProcess(name string) {
	os.WriteFile("/proc/self/comm", []byte(name), 0)
}
