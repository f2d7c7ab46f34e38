package criu

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// TestPreDumpHook runs the hook's script as CRIU would: it calls the
// function at pre-dump only, and fails when the function does.
func TestPreDumpHook(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root for " + hookDir)
	}
	run := func(h *preDumpHook, action string) error {
		cmd := exec.Command(h.args()[1])
		cmd.Env = append(os.Environ(), h.env(), "CRTOOLS_SCRIPT_ACTION="+action)
		return cmd.Run()
	}
	for _, fail := range []bool{false, true} {
		var calls atomic.Int32 // the script's FIFO orders them, unseen by -race
		h, err := newPreDumpHook(func() error {
			calls.Add(1)
			if fail {
				return errors.New("no lock")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := run(h, "post-dump"); err != nil || calls.Load() != 0 {
			t.Errorf("post-dump: %v, %d calls; want no error and no call", err, calls.Load())
		}
		err = run(h, "pre-dump")
		h.close()
		if calls.Load() != 1 || (err != nil) != fail {
			t.Errorf("pre-dump with the lock failing %v: %v, %d calls", fail, err, calls.Load())
		}
		if _, err := os.Stat(h.dir); !os.IsNotExist(err) {
			t.Errorf("%s left behind", h.dir)
		}
	}
}

// TestPreDumpHookUnused: a hook whose CRIU never came to its pre-dump
// closes at once, a script that came too late fails, and a hook left by
// a dead agent goes.
func TestPreDumpHookUnused(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root for " + hookDir)
	}
	// One an agent left when it died goes with the next.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(hookDir, 0o700)
	stale, err := os.MkdirTemp(hookDir, fmt.Sprintf("dump-%d-", dead.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	h, err := newPreDumpHook(func() error { t.Error("called"); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("the stale hook %s is still there", stale)
	}
	script := filepath.Join(h.dir, "pre-dump")
	data, _ := os.ReadFile(script)
	start := time.Now()
	h.close()
	if d := time.Since(start); d > time.Second {
		t.Errorf("close took %s", d)
	}
	late := filepath.Join(t.TempDir(), "pre-dump")
	os.WriteFile(late, data, 0o700)
	cmd := exec.Command(late)
	cmd.Env = append(os.Environ(), h.env(), "CRTOOLS_SCRIPT_ACTION=pre-dump")
	if err := cmd.Run(); err == nil {
		t.Error("a script after close succeeded")
	}
}
