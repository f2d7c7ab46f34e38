package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/hcl/v2"
	"golang.org/x/sys/unix"
)

// Locking the state directory. One apply at a time may use a state
// directory: two runs of the same workflow would otherwise freeze the same
// workload, share its images and undo each other. A second apply is refused
// at once with who holds the lock, or, with a lock timeout, waits for it.
// The lock is an flock(2) on <state-dir>/lock, so it ends with the process
// that held it, even after kill -9: there is never a stale lock to remove by
// hand. (A run that died while it held a workload leaves a record that
// says so; that is for recovery, not for this lock.)

// LockName is the lock file in a state directory.
const LockName = "lock"

// LockHolder is what the lock file says about the apply that holds it.
type LockHolder struct {
	PID      int       `json:"pid"`
	Host     string    `json:"host"`
	Workflow string    `json:"workflow"`
	Since    time.Time `json:"since"`
}

// StateLock is a held lock on a state directory.
type StateLock struct {
	f *os.File
}

// ErrLocked is returned when another apply holds the state directory.
var ErrLocked = errors.New("state directory is locked by another mig apply")

// LockStateDir locks dir for one apply of workflow. When another process
// holds it, it waits up to wait (or until ctx ends) and then fails with an
// error that wraps ErrLocked and names the holder.
func LockStateDir(ctx context.Context, dir, workflow string, wait time.Duration) (*StateLock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, LockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(wait)
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			h := readHolder(path)
			f.Close()
			waited := ""
			if wait > 0 {
				waited = fmt.Sprintf(" (waited %s)", wait)
			}
			return nil, fmt.Errorf("%w%s: pid %d on %s, applying %s since %s. "+
				"Wait for it to finish, or run with -lock-timeout to wait for it; the lock goes away with that process",
				ErrLocked, waited, h.PID, h.Host, h.Workflow, h.Since.Format(time.RFC3339))
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	host, _ := os.Hostname()
	b, _ := json.Marshal(LockHolder{PID: os.Getpid(), Host: host, Workflow: workflow, Since: time.Now().UTC()})
	f.Truncate(0)
	f.WriteAt(append(b, '\n'), 0)
	return &StateLock{f: f}, nil
}

func readHolder(path string) LockHolder {
	var h LockHolder
	if b, err := os.ReadFile(path); err == nil {
		json.Unmarshal(b, &h)
	}
	return h
}

// Unlock releases the lock. The file stays: removing it would let a
// waiting process lock a file that a third one no longer sees.
func (l *StateLock) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	l.f.Truncate(0)
	err := l.f.Close()
	l.f = nil
	return err
}

// lockStateDir locks the run's state directory before its preflight, so two
// applies never both pass it.
func lockStateDir(ctx context.Context, workflow string, opt ApplyOptions) (*StateLock, hcl.Diagnostics) {
	dir := opt.StateDir
	if dir == "" {
		dir = StateDir(workflow)
	}
	lock, err := LockStateDir(ctx, dir, workflow, opt.LockTimeout)
	switch {
	case errors.Is(err, ErrLocked):
		return nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "State directory locked", Detail: fmt.Sprintf("%s: %v.", dir, err)}}
	case err != nil:
		return nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Cannot lock the state directory", Detail: err.Error()}}
	}
	return lock, nil
}
