package container

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/specconv"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// DefaultRoot is runc's own state root, so that containers started with
// the runc CLI can be adopted.
const DefaultRoot = "/run/runc"

// criuConfigLabel is the annotation through which libcontainer hands CRIU
// a configuration file.
const criuConfigLabel = "org.criu.config"

// Runtime manages the containers under one runc state root on this host.
type Runtime struct {
	// Root is the state root (runc's --root), DefaultRoot when empty.
	Root string
	// CRIU is the criu binary to run for checkpoints and restores.
	CRIU string
}

func (r Runtime) root() string {
	if r.Root == "" {
		return DefaultRoot
	}
	return r.Root
}

// Load returns the container id, or an error that names it.
func (r Runtime) Load(id string) (*libcontainer.Container, error) {
	c, err := libcontainer.Load(r.root(), id)
	if errors.Is(err, libcontainer.ErrNotExist) || errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("container %q: no such container under %s", id, r.root())
	}
	if err != nil {
		return nil, fmt.Errorf("container %q: %w", id, err)
	}
	return c, nil
}

// Exists tells whether a container id has state under the root.
func (r Runtime) Exists(id string) bool {
	_, err := os.Stat(filepath.Join(r.root(), id, "state.json"))
	return err == nil
}

// config turns a bundle's config.json into a libcontainer config for id,
// using cgroupfs (there may be no systemd) and no CRIU config file of
// runc's: mig hands CRIU its own through the environment.
func (r Runtime) config(id, bundle string) (*configs.Config, *specs.Spec, error) {
	if !filepath.IsAbs(bundle) {
		return nil, nil, fmt.Errorf("container %q: bundle %q must be an absolute path", id, bundle)
	}
	data, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, nil, fmt.Errorf("container %q: bundle: %w", id, err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(data, &spec); err != nil {
		return nil, nil, fmt.Errorf("container %q: %s/config.json: %w", id, bundle, err)
	}
	if spec.Process == nil || spec.Root == nil {
		return nil, nil, fmt.Errorf("container %q: %s/config.json has no process or root", id, bundle)
	}
	if spec.Process.Terminal {
		return nil, nil, terminalError(id)
	}
	if !filepath.IsAbs(spec.Root.Path) {
		spec.Root.Path = filepath.Join(bundle, spec.Root.Path)
	}
	if _, err := os.Stat(spec.Root.Path); err != nil {
		return nil, nil, fmt.Errorf("container %q: bundle rootfs: %w", id, err)
	}
	if spec.Annotations == nil {
		spec.Annotations = map[string]string{}
	}
	if _, ok := spec.Annotations[criuConfigLabel]; !ok {
		spec.Annotations[criuConfigLabel] = ""
	}
	cfg, err := specconv.CreateLibcontainerConfig(&specconv.CreateOpts{
		CgroupName: id,
		Spec:       &spec,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("container %q: %w", id, err)
	}
	// specconv records the working directory as the bundle; record ours.
	for i, l := range cfg.Labels {
		if strings.HasPrefix(l, "bundle=") {
			cfg.Labels[i] = "bundle=" + bundle
		}
	}
	return cfg, &spec, nil
}

func process(spec *specs.Spec) *libcontainer.Process {
	p := spec.Process
	return &libcontainer.Process{
		Args:            p.Args,
		Env:             p.Env,
		UID:             int(p.User.UID),
		GID:             int(p.User.GID),
		Cwd:             p.Cwd,
		NoNewPrivileges: &p.NoNewPrivileges,
		Init:            true,
	}
}

// Start creates container id from bundle and starts it detached, its
// stdio on pipes (CRIU can only re-wire pipes) whose output goes to
// <root>/<id>/stdio.log. It returns the init PID.
func (r Runtime) Start(id, bundle string) (int, error) {
	return r.start(id, bundle, nil)
}

// create creates container id from bundle's config, not started yet.
func (r Runtime) create(id, bundle string) (*libcontainer.Container, *specs.Spec, error) {
	cfg, spec, err := r.config(id, bundle)
	if err != nil {
		return nil, nil, err
	}
	c, err := libcontainer.Create(r.root(), id, cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("container %q: create: %w", id, err)
	}
	return c, spec, nil
}

// start is Start with the container's stdio given by attach instead, when
// not nil.
func (r Runtime) start(id, bundle string, attach func(*libcontainer.Process)) (int, error) {
	if r.Exists(id) {
		return 0, fmt.Errorf("container %q already exists under %s", id, r.root())
	}
	c, spec, err := r.create(id, bundle)
	if err != nil {
		return 0, err
	}
	p := process(spec)
	if attach != nil {
		attach(p)
	} else {
		io, err := newStdio(filepath.Join(r.root(), id, "stdio.log"))
		if err != nil {
			c.Destroy()
			return 0, fmt.Errorf("container %q: %w", id, err)
		}
		defer io.Close()
		io.attach(p)
	}
	if err := c.Run(p); err != nil {
		c.Destroy()
		return 0, fmt.Errorf("container %q: start: %w", id, err)
	}
	// The init is this process's child: reap it when it exits.
	go p.Wait()
	return p.Pid()
}

// Destroy kills every process of container id and removes its state and
// cgroups. A container that is already gone is not an error.
func (r Runtime) Destroy(id string) error {
	if !r.Exists(id) {
		return nil
	}
	c, err := r.Load(id)
	if err != nil {
		return err
	}
	// A container held by a dump has stopped or frozen tasks: thaw it so
	// SIGKILL is delivered, then destroy.
	if st, err := c.Status(); err == nil && st == libcontainer.Paused {
		_ = c.Resume()
	}
	if err := c.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, libcontainer.ErrNotRunning) {
		return fmt.Errorf("container %q: kill: %w", id, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := c.Status()
		if err != nil || st == libcontainer.Stopped || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := c.Destroy(); err != nil {
		return fmt.Errorf("container %q: %w", id, err)
	}
	return nil
}

// criuMu serialises CRIU runs in this process: libcontainer finds `criu`
// through PATH and CRIU reads CRIU_CONFIG_FILE, both process-wide.
var criuMu sync.Mutex

// withCRIU runs fn with r.CRIU first in PATH as `criu` and with CRIU
// reading the options in conf (one per line, as in a CRIU config file).
func (r Runtime) withCRIU(conf []string, fn func() error) error {
	if r.CRIU == "" {
		return errors.New("no CRIU binary given")
	}
	tmp, err := os.MkdirTemp("", "mig-criu-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Dir(r.CRIU)
	if filepath.Base(r.CRIU) != "criu" {
		bin = tmp
		if err := os.Symlink(r.CRIU, filepath.Join(tmp, "criu")); err != nil {
			return err
		}
	}
	confPath := filepath.Join(tmp, "criu.conf")
	if err := os.WriteFile(confPath, []byte(strings.Join(conf, "\n")+"\n"), 0o600); err != nil {
		return err
	}

	criuMu.Lock()
	defer criuMu.Unlock()
	oldPath, hadPath := os.LookupEnv("PATH")
	oldConf, hadConf := os.LookupEnv("CRIU_CONFIG_FILE")
	os.Setenv("PATH", bin+string(os.PathListSeparator)+oldPath)
	os.Setenv("CRIU_CONFIG_FILE", confPath)
	defer func() {
		restoreEnv("PATH", oldPath, hadPath)
		restoreEnv("CRIU_CONFIG_FILE", oldConf, hadConf)
	}()
	return fn()
}

func restoreEnv(key, val string, had bool) {
	if had {
		os.Setenv(key, val)
	} else {
		os.Unsetenv(key)
	}
}

func terminalError(id string) error {
	return fmt.Errorf("container %q has a terminal: CRIU cannot checkpoint a container's pty "+
		"without handing the pty master back on restore; run it without a terminal "+
		"(process.terminal = false in config.json, detached with stdio on pipes, as `runc run -d` does)", id)
}
