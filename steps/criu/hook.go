package criu

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// A lazy dump runs CRIU from its command line (lazy.go), which has no
// notification like the RPC's pre-dump. mig's lock there goes into an
// action script instead: CRIU runs it for every action, and at pre-dump,
// the last one before the freeze, the script asks the agent to lock and
// waits for the answer. The lock then comes when CRIU is loaded and ready
// to freeze, not before CRIU starts (7 ms earlier here).

// hookScript is the action script. It takes no value from a workflow:
// MIG_HOOK names the hook's private directory.
const hookScript = `#!/bin/sh
# mig: CRIU's pre-dump waits here while mig locks the workload's connections.
[ "$CRTOOLS_SCRIPT_ACTION" = pre-dump ] || exit 0
echo lock > "$MIG_HOOK/ask" || exit 1
read -r answer < "$MIG_HOOK/answer" || exit 1
[ "$answer" = ok ]
`

// hookDir holds a directory per pending hook.
const hookDir = "/run/mig/hooks"

// preDumpHook runs a function when CRIU's pre-dump comes, through two
// FIFOs in its directory: CRIU's script writes to ask, and reads the
// function's outcome from answer.
type preDumpHook struct {
	dir         string
	ask, answer *os.File
	done        chan struct{}
}

// newPreDumpHook prepares a hook that runs f at CRIU's pre-dump; a CRIU
// run with args and env runs it. close ends it.
func newPreDumpHook(f func() error) (*preDumpHook, error) {
	if err := os.MkdirAll(hookDir, 0o700); err != nil {
		return nil, err
	}
	removeStaleHooks()
	dir, err := os.MkdirTemp(hookDir, fmt.Sprintf("dump-%d-", os.Getpid()))
	if err != nil {
		return nil, err
	}
	h := &preDumpHook{dir: dir, done: make(chan struct{})}
	if err := h.open(); err != nil {
		h.ask.Close()
		h.answer.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("pre-dump hook: %w", err)
	}
	go func() {
		defer close(h.done)
		buf := make([]byte, 16)
		if _, err := h.ask.Read(buf); err != nil {
			return // closed: CRIU never came to its pre-dump
		}
		reply := "ok\n"
		if f() != nil {
			reply = "no\n"
		}
		h.answer.WriteString(reply)
	}()
	return h, nil
}

// removeStaleHooks removes the hooks of agents that died before they
// could close them (a script left waiting fails at once).
func removeStaleHooks() {
	dirs, _ := filepath.Glob(filepath.Join(hookDir, "dump-*-*"))
	for _, dir := range dirs {
		var pid int
		if _, err := fmt.Sscanf(filepath.Base(dir), "dump-%d-", &pid); err == nil && pid > 0 && !alive(pid) {
			os.RemoveAll(dir)
		}
	}
}

// open writes the script and makes the FIFOs. Both are opened for reading
// and writing, so that neither end's open waits for the other.
func (h *preDumpHook) open() error {
	if err := os.WriteFile(filepath.Join(h.dir, "pre-dump"), []byte(hookScript), 0o700); err != nil {
		return err
	}
	var err error
	for _, f := range []struct {
		name string
		file **os.File
	}{{"ask", &h.ask}, {"answer", &h.answer}} {
		path := filepath.Join(h.dir, f.name)
		if err = unix.Mkfifo(path, 0o600); err != nil {
			return err
		}
		if *f.file, err = os.OpenFile(path, os.O_RDWR, 0); err != nil {
			return err
		}
	}
	return nil
}

// args are the CRIU options that run the hook.
func (h *preDumpHook) args() []string {
	return []string{"--action-script", filepath.Join(h.dir, "pre-dump")}
}

// env is what CRIU's environment adds for the hook.
func (h *preDumpHook) env() string { return "MIG_HOOK=" + h.dir }

// close ends the hook once CRIU is past its pre-dump, or gone: a script
// still waiting reads the end of its answer and fails.
func (h *preDumpHook) close() {
	h.ask.Close()
	<-h.done
	h.answer.Close()
	os.RemoveAll(h.dir)
}
