package container

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/opencontainers/runc/libcontainer"

	"github.com/mig-project/mig/steps/criu"
)

// Config is a `container` workload block as it travels in action requests.
type Config struct {
	ID     string `json:"id"`
	Bundle string `json:"bundle"`
	Root   string `json:"root"`
	// RestoreID is the container's ID on the target, ID when empty.
	// Hosts that share a cgroupfs (lab hosts on one machine) need another.
	RestoreID      string `json:"restore_id"`
	TCPEstablished bool   `json:"tcp_established"`
	FileLocks      bool   `json:"file_locks"`
	NewConnections string `json:"new_connections"`
}

// Driver is the criu.Driver of `container` workloads: runc containers
// driven through libcontainer.
type Driver struct{}

// NewDriver returns the container driver.
func NewDriver() Driver { return Driver{} }

var _ criu.Driver = Driver{}

func decode(w criu.Workload) (Config, error) {
	var c Config
	if len(w.Config) > 0 {
		if err := json.Unmarshal(w.Config, &c); err != nil {
			return c, fmt.Errorf("%s: %w", w, err)
		}
	}
	if c.ID == "" {
		return c, fmt.Errorf("%s: no container id", w)
	}
	if c.RestoreID == "" {
		c.RestoreID = c.ID
	}
	return c, nil
}

func runtimeFor(env criu.Env, c Config) Runtime {
	routeLogs(env.Log)
	return Runtime{Root: c.Root, CRIU: env.CRIU.Path}
}

// Resolve checks that the container runs and can be checkpointed.
func (Driver) Resolve(ctx context.Context, env criu.Env, w criu.Workload) (criu.Resolved, error) {
	c, err := decode(w)
	if err != nil {
		return criu.Resolved{}, err
	}
	_, src, err := runtimeFor(env, c).CheckSource(c.ID)
	if err != nil {
		return criu.Resolved{}, err
	}
	net := "host network"
	var conns []criu.Conn
	if src.NetNS != "" {
		net = "own netns"
	} else {
		// On the host's network its connections have the host's
		// addresses, which the preflight checks.
		conns = criu.Connections(src.PIDs, nil)
	}
	return criu.Resolved{
		PID:         src.InitPID,
		ID:          c.ID,
		Description: fmt.Sprintf("container %s (init pid %d, %d tasks, %s, bundle %s)", c.ID, src.InitPID, len(src.PIDs), net, src.Bundle),
		Tasks:       len(src.PIDs),
		Listens:     criu.ListenPorts(src.PIDs),
		UDP:         criu.UDPPorts(src.PIDs),
		Conns:       conns,
		Problems:    criu.ContainerProblems(src.PIDs, criu.Options{FileLocks: c.FileLocks}),
	}, nil
}

func (c Config) checkpoint(req criu.DumpRequest) CheckpointOptions {
	o := CheckpointOptions{Dir: req.Dir, Parent: req.Parent, TCPEstablished: c.TCPEstablished, FileLocks: c.FileLocks}
	if ps := req.PageServer; ps != nil {
		o.PageServer = libcontainer.CriuPageServerInfo{Address: ps.Host, Port: int32(ps.Port)}
	}
	return o
}

// PreDump writes one pre-copy round; the kernel must track dirty memory.
func (Driver) PreDump(ctx context.Context, env criu.Env, w criu.Workload, req criu.DumpRequest) (criu.DumpResult, error) {
	c, err := decode(w)
	if err != nil {
		return criu.DumpResult{}, err
	}
	start := time.Now()
	if err := runtimeFor(env, c).PreDump(c.ID, c.checkpoint(req)); err != nil {
		return criu.DumpResult{}, err
	}
	return criu.DumpResult{
		Dir:     req.Dir,
		LogPath: filepath.Join(req.Dir, "dump.log"),
		Stats:   criu.DumpStats(req.Dir),
		Seconds: time.Since(start).Seconds(),
	}, nil
}

// Dump writes the final checkpoint and holds the container: its tasks
// stay stopped and its network locked until Resume or Kill. It records the
// container's ID and bundle in the images (mig-container.json) for
// Restore. A lazy dump returns once the source serves its pages.
func (Driver) Dump(ctx context.Context, env criu.Env, w criu.Workload, req criu.DumpRequest) (_ criu.DumpResult, err error) {
	c, err := decode(w)
	if err != nil {
		return criu.DumpResult{}, err
	}
	r := runtimeFor(env, c)
	_, src, err := r.CheckSource(c.ID)
	if err != nil {
		return criu.DumpResult{}, err
	}
	if err := os.MkdirAll(req.Dir, 0o700); err != nil {
		return criu.DumpResult{}, err
	}
	if err := writeRecord(req.Dir, record{ID: c.ID, Bundle: src.Bundle}); err != nil {
		return criu.DumpResult{}, err
	}
	os.Remove(filepath.Join(req.Dir, frozenFile))
	start := time.Now()
	var held criu.Held
	// New connections wait (or are dropped, or refused: the workload's
	// new_connections) while the container is held, instead of landing in
	// a backlog that the dump would lose.
	ports := criu.ListenPorts(src.PIDs)
	if held.HoldTable, err = criu.HoldPorts(ctx, src.InitPID, ports, criu.UDPPorts(src.PIDs), c.NewConnections); err != nil {
		return criu.DumpResult{}, fmt.Errorf("%s: %w", w, err)
	}
	defer func() {
		if err != nil {
			criu.StopGuard(context.WithoutCancel(ctx), src.InitPID, held.HoldTable)
		}
	}()
	if req.Lazy {
		if req.Listen == nil {
			return criu.DumpResult{}, fmt.Errorf("%s: lazy dump: no listen address", w)
		}
		if held.LazyPID, err = r.lazyDump(ctx, c.ID, c.checkpoint(req), *req.Listen); err != nil {
			return criu.DumpResult{}, err
		}
	} else if src, err = r.Checkpoint(c.ID, c.checkpoint(req)); err != nil {
		return criu.DumpResult{}, err
	}
	if req.Written != nil {
		req.Written()
	}
	held.PID, held.PIDs, held.ID, held.Dir = src.InitPID, src.PIDs, c.ID, req.Dir
	return criu.DumpResult{
		Ports:   ports,
		Conns:   criu.HeldConnections(req.Dir, src.PIDs, ports),
		Dir:     req.Dir,
		LogPath: filepath.Join(req.Dir, "dump.log"),
		Stats:   criu.DumpStats(req.Dir),
		Held:    held,
		Seconds: time.Since(start).Seconds(),
		Frozen:  readFrozen(req.Dir),
	}, nil
}

// Resume undoes Dump: the container runs on and its network is unlocked.
func (Driver) Resume(ctx context.Context, env criu.Env, w criu.Workload, held criu.Held) error {
	c, err := decode(w)
	if err != nil {
		return err
	}
	rt := runtimeFor(env, c)
	if held.LazyPID > 0 {
		// The lazy dump's CRIU traces the tasks: once it is gone they
		// would run at once, before Resume takes their sockets out of
		// repair mode. A stop sent now waits until it lets go.
		if err := rt.signal(c.ID, syscall.SIGSTOP); err != nil {
			return err
		}
	}
	stopLazy(held.LazyPID)
	// Held SYNs go to the listener that runs again.
	release := func() error { return criu.StopGuard(ctx, held.PID, held.HoldTable) }
	if err := rt.Resume(c.ID, held.Dir, release); err != nil {
		return errors.Join(err, release())
	}
	return nil
}

// Kill commits Dump: the source container is destroyed, then CRIU's lock
// is removed from a network namespace that outlives it (the host's, or a
// named one the container joined). Its TCP sockets were left in repair
// mode, so killing them sends nothing to the peers.
func (Driver) Kill(ctx context.Context, env criu.Env, w criu.Workload, held criu.Held) error {
	c, err := decode(w)
	if err != nil {
		return err
	}
	stopLazy(held.LazyPID)
	// The guard lives in the container's network namespace, which may go
	// with it: stop it first.
	if err := criu.StopGuard(ctx, held.PID, held.HoldTable); err != nil {
		env.Log.Warn("removing the hold table", "container", c.ID, "error", err)
	}
	r := runtimeFor(env, c)
	lockNS, hasLock := "", false
	if cont, err := r.Load(c.ID); err == nil {
		lockNS, hasLock = lastingNetNS(cont)
	}
	if err := r.Destroy(c.ID); err != nil {
		return err
	}
	if hasLock && held.Dir != "" {
		if err := r.unlock(Source{ID: c.ID, NetNS: lockNS}, held.Dir, nil); err != nil {
			env.Log.Warn("removing the network lock", "container", c.ID, "error", err)
		}
	}
	return nil
}

// Restore creates the container under its restore ID from the bundle and
// restores it from req.Dir.
func (Driver) Restore(ctx context.Context, env criu.Env, w criu.Workload, req criu.RestoreRequest) (criu.RestoreResult, error) {
	c, err := decode(w)
	if err != nil {
		return criu.RestoreResult{}, err
	}
	bundle, err := c.bundle(req.Dir)
	if err != nil {
		return criu.RestoreResult{}, err
	}
	r := runtimeFor(env, c)
	start := time.Now()
	var lazyPID int
	if req.Lazy {
		if req.Source == nil {
			return criu.RestoreResult{}, fmt.Errorf("%s: lazy restore: no source address", w)
		}
		if lazyPID, err = r.lazyPages(ctx, req.Dir, *req.Source); err != nil {
			return criu.RestoreResult{}, fmt.Errorf("%s: %w", w, err)
		}
	}
	pid, err := r.Restore(c.RestoreID, bundle, RestoreOptions{Dir: req.Dir, TCPEstablished: c.TCPEstablished, FileLocks: c.FileLocks, Lazy: req.Lazy})
	if err != nil {
		stopLazy(lazyPID)
		return criu.RestoreResult{}, err
	}
	return criu.RestoreResult{
		PID:     pid,
		ID:      c.RestoreID,
		LazyPID: lazyPID,
		LogPath: filepath.Join(req.Dir, "restore.log"),
		Stats:   criu.RestoreStats(req.Dir),
		Seconds: time.Since(start).Seconds(),
	}, nil
}

// KillRestored undoes Restore: the restored container is destroyed.
func (Driver) KillRestored(ctx context.Context, env criu.Env, w criu.Workload, res criu.RestoreResult) error {
	c, err := decode(w)
	if err != nil {
		return err
	}
	stopLazy(res.LazyPID)
	id := res.ID
	if id == "" {
		id = c.RestoreID
	}
	return runtimeFor(env, c).Destroy(id)
}

// CheckTarget lists why the container could not be restored on this host:
// its restore ID is taken, its bundle is missing, or its cgroups are in
// use (hosts sharing a cgroupfs need distinct IDs).
func (Driver) CheckTarget(ctx context.Context, env criu.Env, w criu.Workload, req criu.CheckRequest) ([]string, error) {
	c, err := decode(w)
	if err != nil {
		return nil, err
	}
	r := runtimeFor(env, c)
	var problems []string
	switch {
	case c.Bundle != "":
		problems = r.CheckTarget(c.RestoreID, c.Bundle)
	case r.Exists(c.RestoreID):
		// Without a bundle in the workflow, Restore takes the source's
		// path from the images; it can only be checked then.
		problems = append(problems, fmt.Sprintf("container %q: the ID is already in use under %s on this host", c.RestoreID, r.root()))
	}
	return problems, nil
}

// record is what Dump leaves in the images for Restore.
type record struct {
	ID     string `json:"id"`
	Bundle string `json:"bundle"`
}

const recordFile = "mig-container.json"

func writeRecord(dir string, r record) error {
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, recordFile), data, 0o600)
}

// bundle is the workflow's bundle, or else the source's, from the images.
func (c Config) bundle(dir string) (string, error) {
	if c.Bundle != "" {
		return c.Bundle, nil
	}
	data, err := os.ReadFile(filepath.Join(dir, recordFile))
	if err != nil {
		return "", fmt.Errorf("container %q: no bundle given and none recorded in the images: %w", c.ID, err)
	}
	var r record
	if err := json.Unmarshal(data, &r); err != nil {
		return "", fmt.Errorf("container %q: %s: %w", c.ID, recordFile, err)
	}
	if strings.TrimSpace(r.Bundle) == "" {
		return "", fmt.Errorf("container %q: no bundle given and none recorded in the images", c.ID)
	}
	return r.Bundle, nil
}
