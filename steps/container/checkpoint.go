package container

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"

	"github.com/mig-project/mig/steps/criu"
)

// Source is a running container checked for a checkpoint.
type Source struct {
	ID      string
	InitPID int
	PIDs    []int
	// NetNS is the container's network namespace path, "" when it shares
	// the host's.
	NetNS  string
	Bundle string
}

// CheckSource loads container id and checks that CRIU can checkpoint it:
// it runs (not stopped, not paused), has no terminal, and its stdio are
// pipes.
func (r Runtime) CheckSource(id string) (*libcontainer.Container, Source, error) {
	c, err := r.Load(id)
	if err != nil {
		return nil, Source{}, err
	}
	st, err := c.State()
	if err != nil {
		return nil, Source{}, fmt.Errorf("container %q: %w", id, err)
	}
	status, err := c.Status()
	if err != nil {
		return nil, Source{}, fmt.Errorf("container %q: %w", id, err)
	}
	switch status {
	case libcontainer.Running:
	case libcontainer.Paused:
		return nil, Source{}, fmt.Errorf("container %q is paused: mig checkpoints running containers; resume it first (runc --root %s resume %s)", id, r.root(), id)
	default:
		return nil, Source{}, fmt.Errorf("container %q is %s, not running", id, status)
	}
	for fd, d := range st.ExternalDescriptors {
		switch {
		case strings.HasPrefix(d, "/dev/pts/") || d == "/dev/ptmx" || strings.HasPrefix(d, "/dev/tty"):
			return nil, Source{}, terminalError(id)
		case !strings.HasPrefix(d, "pipe:"):
			return nil, Source{}, fmt.Errorf("container %q: its fd %d is %s: CRIU can only re-wire stdio that are pipes; start the container detached with stdio on pipes", id, fd, d)
		}
	}
	pids, err := c.Processes()
	if err != nil {
		return nil, Source{}, fmt.Errorf("container %q: %w", id, err)
	}
	src := Source{ID: id, InitPID: st.InitProcessPid, PIDs: pids, NetNS: st.NamespacePaths[configs.NEWNET]}
	if cfg := c.Config(); !cfg.Namespaces.Contains(configs.NEWNET) {
		src.NetNS = ""
	}
	for _, l := range c.Config().Labels {
		if b, ok := strings.CutPrefix(l, "bundle="); ok {
			src.Bundle = b
		}
	}
	return c, src, nil
}

// CheckpointOptions are the CRIU switches of a container checkpoint.
type CheckpointOptions struct {
	Dir string // images directory
	// Parent is the previous pre-dump round, relative to Dir.
	Parent         string
	TCPEstablished bool
	FileLocks      bool
	// PageServer sends the pages to a running `criu page-server`.
	PageServer libcontainer.CriuPageServerInfo
}

func (o CheckpointOptions) criu() *libcontainer.CriuOpts {
	return &libcontainer.CriuOpts{
		ImagesDirectory:   o.Dir,
		ParentImage:       o.Parent,
		TcpEstablished:    o.TCPEstablished,
		TcpSkipInFlight:   true, // a connection still in a listener's queue must not fail the dump
		FileLocks:         o.FileLocks,
		PageServer:        o.PageServer,
		ManageCgroupsMode: "soft",
		StatusFd:          -1,
	}
}

// Checkpoint writes the final checkpoint of container id and holds it:
// CRIU leaves its tasks stopped and its network locked (nftables), so
// that Resume can undo the dump and Destroy commits it.
func (r Runtime) Checkpoint(id string, o CheckpointOptions) (Source, error) {
	c, src, err := r.CheckSource(id)
	if err != nil {
		return src, err
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return src, err
	}
	err = r.checkpointHeld(c, o.criu())
	if err != nil {
		// A failed dump resumes the tasks and unlocks the network itself.
		return src, fmt.Errorf("container %q: checkpoint: %w%s", id, err, criuLogTail(filepath.Join(o.Dir, "dump.log")))
	}
	return src, nil
}

// checkpointHeld freezes the container, then checkpoints it and leaves it
// stopped with its network locked. libcontainer's freezer polls without
// sleeping; CRIU's own cgroup-v1 freeze sleeps 100 ms whenever it first
// reads FREEZING, and clients would wait that long. CRIU puts the freezer
// back as it found it, so a held container stays paused until Resume or
// Kill; a failed checkpoint is thawed here.
func (r Runtime) checkpointHeld(c *libcontainer.Container, opts *libcontainer.CriuOpts) error {
	// The pause the clients see starts here, not when CRIU starts.
	writeFrozen(opts.ImagesDirectory, time.Now())
	if err := c.Pause(); err != nil {
		return fmt.Errorf("freeze: %w", err)
	}
	defer pushPageServer(opts)()
	err := r.withCRIU([]string{"network-lock nftables", "leave-stopped"}, func() error { return c.Checkpoint(opts) })
	if err != nil {
		c.Resume()
	}
	return err
}

// frozenFile, in the images dir, holds when the checkpoint froze the
// container (unix nanoseconds): a lazy dump freezes it in a helper process.
const frozenFile = "mig-frozen"

func writeFrozen(dir string, t time.Time) {
	os.WriteFile(filepath.Join(dir, frozenFile), []byte(strconv.FormatInt(t.UnixNano(), 10)), 0o600)
}

// readFrozen says when the checkpoint into dir froze the container, 0
// when it does not know.
func readFrozen(dir string) int64 {
	b, _ := os.ReadFile(filepath.Join(dir, frozenFile))
	t, _ := strconv.ParseInt(string(b), 10, 64)
	return t
}

// pushPageServer keeps CRIU's page-server socket from holding its last
// message (criu.PushPageServer) while a checkpoint sends its pages to one.
func pushPageServer(opts *libcontainer.CriuOpts) (stop func()) {
	a, err := netip.ParseAddr(opts.PageServer.Address)
	if err != nil || opts.PageServer.Port <= 0 || opts.LazyPages {
		return func() {}
	}
	return criu.PushPageServer(netip.AddrPortFrom(a, uint16(opts.PageServer.Port)))
}

// PreDump writes one pre-copy round of container id, leaving it running.
func (r Runtime) PreDump(id string, o CheckpointOptions) error {
	c, _, err := r.CheckSource(id)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return err
	}
	opts := o.criu()
	opts.PreDump = true
	defer pushPageServer(opts)()
	err = r.withCRIU(nil, func() error { return c.Checkpoint(opts) })
	if err != nil && strings.Contains(err.Error(), "MemTrack") {
		return fmt.Errorf("container %q: pre-dump impossible on this host: the kernel has no dirty-memory tracking (CONFIG_MEM_SOFT_DIRTY); %w", id, err)
	}
	if err != nil {
		return fmt.Errorf("container %q: pre-dump: %w%s", id, err, criuLogTail(filepath.Join(o.Dir, "dump.log")))
	}
	return nil
}

// signal sends sig to every task of container id.
func (r Runtime) signal(id string, sig syscall.Signal) error {
	c, err := r.Load(id)
	if err != nil {
		return err
	}
	pids, err := c.Processes()
	if err != nil {
		return fmt.Errorf("container %q: %w", id, err)
	}
	if err := criu.SignalAll(pids, sig); err != nil {
		return fmt.Errorf("container %q: %w", id, err)
	}
	return nil
}

// Resume undoes a held Checkpoint into dir: every task of container id
// continues and CRIU's network lock is removed. release, when not nil,
// lets go of new connections held meanwhile, once the lock's rules are
// gone and before its chains go (see FlushNftTable).
func (r Runtime) Resume(id, dir string, release func() error) error {
	c, err := r.Load(id)
	if err != nil {
		return err
	}
	st, err := c.State()
	if err != nil {
		return fmt.Errorf("container %q: %w", id, err)
	}
	src := Source{ID: id, InitPID: st.InitProcessPid}
	if cfg := c.Config(); cfg.Namespaces.Contains(configs.NEWNET) {
		src.NetNS = st.NamespacePaths[configs.NEWNET]
	}
	if status, _ := c.Status(); status == libcontainer.Paused {
		if err := c.Resume(); err != nil {
			return fmt.Errorf("container %q: thaw: %w", id, err)
		}
	}
	pids, err := c.Processes()
	if err != nil {
		return fmt.Errorf("container %q: %w", id, err)
	}
	if err := criu.RepairOff(pids); err != nil {
		return fmt.Errorf("container %q: TCP repair mode: %w", id, err)
	}
	if err := criu.SignalAll(pids, syscall.SIGCONT); err != nil {
		return fmt.Errorf("container %q: continue: %w", id, err)
	}
	// libcontainer marks a dumped container with this file; it is no
	// longer true once the container runs on.
	os.Remove(filepath.Join(r.root(), id, "checkpoint"))
	return r.unlock(src, dir, release)
}

// unlock removes CRIU's nftables network lock of a dump into dir, from
// the container's network namespace (or the host's). CRIU names the table
// after the dump's UUID, cut short: "CRIU-" plus a prefix of the UUID.
//
// A dump killed before it wrote its inventory leaves no UUID: then every
// CRIU table of the container's own namespace goes, and none of the
// host's, which cannot be told apart from other dumps' locks.
func (r Runtime) unlock(src Source, dir string, release func() error) error {
	uuid, err := dumpUUID(dir)
	if err != nil && src.NetNS == "" {
		return nil
	}
	var netns *os.File
	if src.NetNS != "" {
		if netns, err = os.Open(src.NetNS); err != nil {
			return fmt.Errorf("container %q: %w", src.ID, err)
		}
		defer netns.Close()
	}
	tables, err := criu.NftTables(netns)
	if err != nil {
		return fmt.Errorf("container %q: %w", src.ID, err)
	}
	var errs []error
	locks := criu.LockTables(tables, uuid)
	// The lock's rules go first and its chains last, with release
	// between: deleting a chain drops the packets a guard holds.
	for _, table := range locks {
		if err := criu.FlushNftTable(netns, table); err != nil {
			errs = append(errs, fmt.Errorf("container %q: %w", src.ID, err))
		}
	}
	if release != nil {
		errs = append(errs, release())
	}
	for _, table := range locks {
		if err := criu.DeleteNftTable(netns, table); err != nil {
			errs = append(errs, fmt.Errorf("container %q: %w", src.ID, err))
		}
	}
	return errors.Join(errs...)
}

var uuidRe = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)

// dumpUUID reads the dump's UUID from its inventory image. go-criu's
// inventory type predates the field, so it is found by its form.
func dumpUUID(dir string) (string, error) {
	data, err := os.ReadFile(filepath.Join(dir, "inventory.img"))
	if err != nil {
		return "", fmt.Errorf("dump inventory: %w", err)
	}
	uuid := uuidRe.Find(data)
	if uuid == nil {
		return "", fmt.Errorf("%s/inventory.img: no dump UUID", dir)
	}
	return string(uuid), nil
}

// lastingNetNS tells where a container's network lock outlives it: in
// the host's namespace ("", true), in a named namespace it joined (path,
// true), or nowhere when its own namespace dies with it.
func lastingNetNS(c *libcontainer.Container) (string, bool) {
	cfg := c.Config()
	for _, ns := range cfg.Namespaces {
		if ns.Type == configs.NEWNET {
			return ns.Path, ns.Path != ""
		}
	}
	return "", true
}

// criuLogTail returns the error lines of a CRIU log, for error messages.
func criuLogTail(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var keep []string
	for _, l := range strings.Split(string(data), "\n") {
		if strings.Contains(l, "Error") && !strings.Contains(l, "RLIMIT_NOFILE") {
			keep = append(keep, strings.TrimSpace(l))
		}
	}
	if len(keep) > 5 {
		keep = keep[len(keep)-5:]
	}
	if len(keep) == 0 {
		return " (see " + path + ")"
	}
	return "\n  " + strings.Join(keep, "\n  ") + "\n  (full log: " + path + ")"
}
