package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// hostEnv is the environment of a host's init and of what it spawns.
var hostEnv = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"HOME=/root",
	"LANG=C.UTF-8",
}

// Up brings the lab up and returns it. When the lab is already up and
// healthy with the same options it returns quickly and changes nothing; a
// half-built or broken lab is torn down and built again.
func Up(ctx context.Context, opts Options) (*Lab, error) {
	if err := requireRoot("lab up", "creates namespaces, a bridge and veths"); err != nil {
		return nil, err
	}
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	if opts.MigBinary == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		opts.MigBinary = exe
	}
	unlock, err := lock(opts.Root, opts.Name)
	if err != nil {
		return nil, err
	}
	defer unlock()

	dir := filepath.Join(opts.Root, opts.Name)
	if st, err := readState(dir); err == nil {
		l := &Lab{state: st, log: opts.Log}
		problem := l.check(ctx, opts)
		if problem == nil {
			opts.Log.Debug("lab is up", "lab", opts.Name)
			return l, nil
		}
		opts.Log.Info("rebuilding lab", "lab", opts.Name, "reason", problem)
	}
	if err := teardownLocked(ctx, opts.Root, opts.Name, opts.Log); err != nil {
		return nil, fmt.Errorf("clear old lab %s: %w", opts.Name, err)
	}
	l, err := build(ctx, opts, dir)
	if err != nil {
		if derr := teardownLocked(context.WithoutCancel(ctx), opts.Root, opts.Name, opts.Log); derr != nil {
			opts.Log.Error("cleaning up after a failed lab up", "error", derr)
		}
		return nil, fmt.Errorf("lab up %s: %w", opts.Name, err)
	}
	return l, nil
}

// check returns why the lab does not match opts or is unhealthy, nil when
// it is fine.
func (l *Lab) check(ctx context.Context, opts Options) error {
	st := l.state
	switch {
	case st.Subnet != opts.Subnet:
		return fmt.Errorf("subnet %s, want %s", st.Subnet, opts.Subnet)
	case len(st.Hosts) != opts.Hosts:
		return fmt.Errorf("%d hosts, want %d", len(st.Hosts), opts.Hosts)
	case !linkUp(st.Bridge):
		return fmt.Errorf("bridge %s is missing or down", st.Bridge)
	}
	for _, p := range []string{l.Identity(), l.KnownHosts(), l.HostsFile()} {
		if _, err := os.Stat(p); err != nil {
			return err
		}
	}
	for _, h := range st.Hosts {
		if !h.alive() {
			return fmt.Errorf("host %s: init (pid %d) is not running", h.Name, h.PID)
		}
		if !linkUp(h.Veth) {
			return fmt.Errorf("host %s: veth %s is missing or down", h.Name, h.Veth)
		}
		if err := sshBanner(ctx, net.JoinHostPort(h.IP, "22")); err != nil {
			return fmt.Errorf("host %s: %w", h.Name, err)
		}
	}
	return nil
}

func build(ctx context.Context, opts Options, dir string) (*Lab, error) {
	log := opts.Log
	start := time.Now()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	prefix := netip.MustParsePrefix(opts.Subnet)
	gw := hostAddr(opts.Subnet, 1)
	l := &Lab{log: log, state: state{
		Name:      opts.Name,
		Dir:       dir,
		Subnet:    opts.Subnet,
		Bridge:    bridgeName(opts.Name),
		Gateway:   gw.String(),
		MigBinary: opts.MigBinary,
	}}
	if err := writeState(l.state); err != nil {
		return nil, err
	}
	if err := keygen(ctx, l.Identity(), "mig-lab-"+opts.Name); err != nil {
		return nil, err
	}
	pub, err := os.ReadFile(l.Identity() + ".pub")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600); err != nil {
		return nil, err
	}
	raisePIDMax(log)
	br, err := ensureBridge(l.state.Bridge, netip.PrefixFrom(gw, prefix.Bits()))
	if err != nil {
		return nil, err
	}
	for i := 1; i <= opts.Hosts; i++ {
		h := Host{
			Name: fmt.Sprintf("h%d", i),
			IP:   hostAddr(opts.Subnet, 10+i).String(),
			Veth: vethName(opts.Name, i),
			Dir:  filepath.Join(dir, fmt.Sprintf("h%d", i)),
		}
		if err := prepareHostDir(ctx, h, dir); err != nil {
			return nil, err
		}
		if err := l.startInit(ctx, &h, opts.MigBinary, i*pidStep(opts.Hosts)); err != nil {
			return nil, err
		}
		addr := netip.PrefixFrom(netip.MustParseAddr(h.IP), prefix.Bits())
		if err := plugHost(br, h.Veth, h.PID, addr, gw); err != nil {
			return nil, fmt.Errorf("host %s: %w", h.Name, err)
		}
		sshd := []string{"/usr/sbin/sshd", "-D", "-e", "-f", filepath.Join(h.Dir, "sshd_config")}
		if _, err := l.Start(ctx, h.Name, sshd, StartOptions{Log: filepath.Join(h.Dir, "sshd.log")}); err != nil {
			return nil, fmt.Errorf("host %s: start sshd: %w", h.Name, err)
		}
	}
	kh, err := knownHosts(l.state.Hosts)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(l.KnownHosts(), kh, 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(l.HostsFile(), hostsHCL(l), 0o644); err != nil {
		return nil, err
	}
	for _, h := range l.state.Hosts {
		if err := waitSSH(ctx, net.JoinHostPort(h.IP, "22"), 10*time.Second); err != nil {
			return nil, fmt.Errorf("host %s: %w (see %s)", h.Name, err, filepath.Join(h.Dir, "sshd.log"))
		}
	}
	log.Info("lab up", "lab", opts.Name, "hosts", opts.Hosts, "seconds", time.Since(start).Seconds())
	return l, nil
}

// pidMax is what systemd sets kernel.pid_max to on 64-bit machines.
const pidMax = 4194304

// raisePIDMax raises kernel.pid_max to pidMax when it is lower. The hosts
// split the PID space (see pidStep); with the kernel's default of 32768
// each gets 10000 PIDs, which a long test run uses up, and then a restore
// finds its PID taken by a process of the host whose range it ran into.
func raisePIDMax(log hclog.Logger) {
	const path = "/proc/sys/kernel/pid_max"
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	have, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || have >= pidMax {
		return
	}
	if err := os.WriteFile(path, []byte(strconv.Itoa(pidMax)), 0o644); err != nil {
		log.Warn("cannot raise kernel.pid_max; lab hosts get small PID ranges", "pid_max", have, "error", err)
		return
	}
	log.Info("raised kernel.pid_max for the lab's PID ranges", "from", have, "to", pidMax)
}

// pidStep splits the PID space between hosts: host i's processes get
// PIDs from i*pidStep on.
func pidStep(hosts int) int {
	max := 32768
	if b, err := os.ReadFile("/proc/sys/kernel/pid_max"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			max = n
		}
	}
	step := max / (hosts + 1)
	if step > 100000 {
		step = 100000
	}
	if step >= 1000 {
		step -= step % 1000
	}
	return step
}

func prepareHostDir(ctx context.Context, h Host, labDir string) error {
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{h.Dir, 0o700}, {filepath.Join(h.Dir, "var-lib-mig"), 0o755}, {filepath.Join(h.Dir, "root"), 0o700}, {filepath.Join(h.Dir, "tmp"), 0o777 | os.ModeSticky}} {
		if err := os.MkdirAll(d.path, d.mode); err != nil {
			return err
		}
		if err := os.Chmod(d.path, d.mode); err != nil {
			return err
		}
	}
	if err := keygen(ctx, filepath.Join(h.Dir, "ssh_host_ed25519_key"), "mig-lab-"+h.Name); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(h.Dir, "sshd_config"), []byte(sshdConfig(h, labDir)), 0o600)
}

// startInit starts h's PID 1 in new namespaces, records it in the state
// file at once, and waits for it to report that the host is set up.
func (l *Lab) startInit(ctx context.Context, h *Host, migBinary string, pidBase int) error {
	logf, err := os.OpenFile(filepath.Join(h.Dir, "init.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	cmd := exec.Command(migBinary, "lab", "init", "-lab", l.state.Name, "-host", h.Name, "-dir", h.Dir, "-pid-base", strconv.Itoa(pidBase))
	cmd.Env = hostEnv
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWPID | syscall.CLONE_NEWNS | syscall.CLONE_NEWUTS,
		Setsid:     true,
	}
	err = cmd.Start()
	w.Close()
	if err != nil {
		return fmt.Errorf("host %s: start init %s: %w", h.Name, migBinary, err)
	}
	// Reap it if this process outlives it (tests); otherwise it is
	// inherited by the machine's init when mig exits.
	go cmd.Wait()
	h.PID = cmd.Process.Pid
	if h.StartTime, _, err = procStart(h.PID); err != nil {
		return fmt.Errorf("host %s: init exited at once (see %s)", h.Name, filepath.Join(h.Dir, "init.log"))
	}
	l.state.Hosts = append(l.state.Hosts, *h)
	if err := writeState(l.state); err != nil {
		return err
	}

	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(r).ReadString('\n')
		line <- strings.TrimSpace(s)
	}()
	select {
	case s := <-line:
		if s != "ok" {
			if s == "" {
				s = "init exited"
			}
			return fmt.Errorf("host %s: %s (see %s)", h.Name, s, filepath.Join(h.Dir, "init.log"))
		}
	case <-time.After(10 * time.Second):
		return fmt.Errorf("host %s: init did not report ready within 10s", h.Name)
	case <-ctx.Done():
		return ctx.Err()
	}
	log := l.log.With("host", h.Name)
	log.Debug("host init running", "pid", h.PID)
	return nil
}

// lock takes an exclusive lock for the lab named name.
func lock(root, name string) (func(), error) {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(root, "."+name+".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock lab %s: %w", name, err)
	}
	return func() { f.Close() }, nil
}

func teardown(ctx context.Context, root, name string, log hclog.Logger) error {
	unlock, err := lock(root, name)
	if err != nil {
		return err
	}
	defer unlock()
	if err := teardownLocked(ctx, root, name, log); err != nil {
		return err
	}
	// The lock file stays: removing it would let a waiter and a newcomer
	// hold two different locks.
	return nil
}

func teardownLocked(ctx context.Context, root, name string, log hclog.Logger) error {
	dir := filepath.Join(root, name)
	st, err := readState(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		log.Warn("unreadable lab state; sweeping by name", "error", err)
	}
	var errs []error
	for _, h := range st.Hosts {
		if err := h.kill(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, h := range st.Hosts {
		waitGone(ctx, h)
	}
	if err := sweepLinks(name); err != nil {
		errs = append(errs, err)
	}
	if err := unmountUnder(dir); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// waitGone waits until h's init has been reaped, or is a zombie for more
// than a few seconds (its parent does not reap it; its namespace is gone).
func waitGone(ctx context.Context, h Host) {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		t, _, err := procStart(h.PID)
		if err != nil || t != h.StartTime {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// unmountUnder detaches any mount of the root namespace below dir. The
// lab makes none there, but a crash of an older mig might have.
func unmountUnder(dir string) error {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			points = append(points, f[4])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(points)))
	var errs []error
	for _, p := range points {
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}
