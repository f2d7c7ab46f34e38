package container

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/opencontainers/cgroups/manager"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/mig-project/mig/steps/criu"
)

// CheckTarget lists why container id could not be restored here from
// bundle: the ID is taken, or the bundle is missing. Empty when it can.
func (r Runtime) CheckTarget(id, bundle string) []string {
	var problems []string
	if r.Exists(id) {
		problems = append(problems, fmt.Sprintf("container %q: the ID is already in use under %s on this host", id, r.root()))
	}
	cfg, spec, err := r.config(id, bundle)
	if err != nil {
		return append(problems, err.Error())
	}
	if spec.Linux != nil {
		for _, ns := range spec.Linux.Namespaces {
			if ns.Path == "" {
				continue
			}
			if _, err := os.Stat(ns.Path); err != nil {
				problems = append(problems, fmt.Sprintf("container %q: its %s namespace %s does not exist on this host (create it, with the service address, before the restore)", id, ns.Type, ns.Path))
			}
		}
	}
	if m, err := manager.New(cfg.Cgroups); err == nil && m.Exists() {
		problems = append(problems, fmt.Sprintf("container %q: its cgroup %s already exists on this host "+
			"(hosts that share a cgroupfs, such as lab hosts on one machine, need distinct IDs: set restore_id)", id, m.Path("")))
	}
	return problems
}

// RestoreOptions are the CRIU switches of a container restore.
type RestoreOptions struct {
	Dir            string // images directory
	TCPEstablished bool
	FileLocks      bool
	// Lazy restores with pages fetched by a running `criu lazy-pages`
	// working in Dir.
	Lazy bool
}

// Restore creates container id from bundle and restores it from the
// images in o.Dir, with new stdio pipes in place of the dumped ones. It
// returns the restored init PID. On failure nothing is left behind.
func (r Runtime) Restore(id, bundle string, o RestoreOptions) (pid int, err error) {
	if r.Exists(id) {
		return 0, fmt.Errorf("container %q: the ID is already in use under %s on this host", id, r.root())
	}
	if _, err := os.Stat(filepath.Join(o.Dir, "descriptors.json")); err != nil {
		return 0, fmt.Errorf("container %q: %s holds no container checkpoint: %w", id, o.Dir, err)
	}
	c, spec, err := r.create(id, bundle)
	if err != nil {
		return 0, err
	}
	created := c
	defer func() {
		if err == nil {
			return
		}
		// A container that CRIU did not restore has no init to find by
		// its state: destroy it through the value that created it.
		if st, serr := created.Status(); serr == nil && st != libcontainer.Stopped {
			r.Destroy(id)
			return
		}
		created.Destroy()
	}()
	p := process(spec)
	io, err := newStdio(filepath.Join(r.root(), id, "stdio.log"))
	if err != nil {
		return 0, fmt.Errorf("container %q: %w", id, err)
	}
	defer io.Close()
	io.attach(p)
	// CRIU unlocks the network in its own namespace, and in the
	// container's when it restores that too: then it is left to unlock.
	if netns, restored := netnsOf(spec); !restored {
		criu.SkipNoopUnlock(o.Dir, netns...)
	}
	opts := &libcontainer.CriuOpts{
		ImagesDirectory:   o.Dir,
		TcpEstablished:    o.TCPEstablished,
		FileLocks:         o.FileLocks,
		LazyPages:         o.Lazy,
		ManageCgroupsMode: "soft",
		StatusFd:          -1,
	}
	err = r.withCRIU([]string{"network-lock nftables"}, func() error { return c.Restore(p, opts) })
	if err != nil {
		return 0, fmt.Errorf("container %q: restore: %w%s", id, err, criuLogTail(filepath.Join(o.Dir, "restore.log")))
	}
	// The restored *Container value no longer tracks its init; load it
	// again from its state.
	c, err = r.Load(id)
	if err != nil {
		return 0, err
	}
	st, err := c.State()
	if err != nil {
		return 0, fmt.Errorf("container %q: %w", id, err)
	}
	return st.InitProcessPid, nil
}

// netnsOf says which network namespace a container from spec joins: the
// host's (none), a named one (its path), or one the restore creates
// (restored).
func netnsOf(spec *specs.Spec) (paths []string, restored bool) {
	if spec.Linux == nil {
		return nil, false
	}
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			if ns.Path == "" {
				return nil, true
			}
			return []string{ns.Path}, false
		}
	}
	return nil, false
}
