// Package lab builds hosts out of Linux namespaces on one machine, so that
// tests, demos and benchmarks can move processes between real hosts.
//
// Each lab host has its own net, pid, mount and uts namespaces, and its own
// /var/lib/mig, /root, /tmp and /run; the rest of the file system is the
// machine's. Its PID 1 is mig's hidden `lab init` subcommand (see Init),
// which reaps children and starts background processes on request. A veth
// pair links the host's eth0 to a bridge in the root namespace, which holds
// the subnet's first address. Every host runs Debian's sshd on its lab IP
// with a host key made by the lab, and Up writes an identity, a known_hosts
// file and a hosts.hcl file that workflows can include.
package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"

	"github.com/hashicorp/go-hclog"
)

// Defaults for Options.
const (
	DefaultName   = "lab"
	DefaultSubnet = "10.77.0.0/24"
	DefaultHosts  = 2
	DefaultRoot   = "/var/lib/mig-lab"
)

// Options describe a lab.
type Options struct {
	Name      string // short name, [a-z0-9]{1,8}; default "lab"
	Hosts     int    // number of hosts, default 2
	Subnet    string // IPv4 CIDR with prefix ≤ /24, default 10.77.0.0/24
	Root      string // parent of the lab's state dir, default /var/lib/mig-lab
	MigBinary string // binary whose `lab init` runs as each host's PID 1
	Log       hclog.Logger
}

// Host is one lab host.
type Host struct {
	Name      string `json:"name"`       // h1, h2, …
	IP        string `json:"ip"`         // its address on the lab's subnet
	PID       int    `json:"pid"`        // PID of its init, in the root namespace
	StartTime uint64 `json:"start_time"` // of that PID, to detect reuse
	Veth      string `json:"veth"`       // root-side end of its veth pair
	Dir       string `json:"dir"`        // its state dir on the machine
}

// Lab is a set of hosts described by its state file.
type Lab struct {
	state state
	log   hclog.Logger
}

var nameRE = regexp.MustCompile(`^[a-z0-9]{1,8}$`)

func (o *Options) defaults() error {
	if o.Name == "" {
		o.Name = DefaultName
	}
	if !nameRE.MatchString(o.Name) {
		return fmt.Errorf("lab name %q: want 1 to 8 characters from a-z and 0-9 (it is part of interface names)", o.Name)
	}
	if o.Hosts == 0 {
		o.Hosts = DefaultHosts
	}
	if o.Hosts < 1 || o.Hosts > 200 {
		return fmt.Errorf("lab hosts: %d is not between 1 and 200", o.Hosts)
	}
	if o.Subnet == "" {
		o.Subnet = DefaultSubnet
	}
	p, err := netip.ParsePrefix(o.Subnet)
	if err != nil || !p.Addr().Is4() || p.Bits() > 24 {
		return fmt.Errorf("lab subnet %q: want an IPv4 CIDR with a prefix of /24 or shorter", o.Subnet)
	}
	o.Subnet = p.Masked().String()
	if o.Root == "" {
		o.Root = DefaultRoot
	}
	if o.Log == nil {
		o.Log = hclog.NewNullLogger()
	}
	return nil
}

// Bridge is the name of the lab's bridge in the root namespace.
func bridgeName(lab string) string { return "mig-" + lab }

// vethName is the root-side end of host i's veth pair.
func vethName(lab string, i int) string { return fmt.Sprintf("mv-%s-%d", lab, i) }

// hostAddr returns the n-th address of the subnet.
func hostAddr(subnet string, n int) netip.Addr {
	p := netip.MustParsePrefix(subnet)
	a := p.Addr().As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v += uint32(n)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func requireRoot(what, why string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%s needs root: it %s (run it with sudo)", what, why)
	}
	return nil
}

// Name is the lab's name.
func (l *Lab) Name() string { return l.state.Name }

// Dir is the lab's state dir.
func (l *Lab) Dir() string { return l.state.Dir }

// Subnet is the lab's subnet in CIDR form.
func (l *Lab) Subnet() string { return l.state.Subnet }

// Bridge is the name of the lab's bridge in the root namespace.
func (l *Lab) Bridge() string { return l.state.Bridge }

// Gateway is the root namespace's address on the lab's subnet.
func (l *Lab) Gateway() string { return l.state.Gateway }

// Identity is the private key that logs in to every host as root.
func (l *Lab) Identity() string { return filepath.Join(l.state.Dir, "id_ed25519") }

// KnownHosts lists every host's key, by IP.
func (l *Lab) KnownHosts() string { return filepath.Join(l.state.Dir, "known_hosts") }

// HostsFile is the HCL file with a `host` block for each lab host.
func (l *Lab) HostsFile() string { return filepath.Join(l.state.Dir, "hosts.hcl") }

// Hosts returns the lab's hosts in order.
func (l *Lab) Hosts() []Host { return append([]Host(nil), l.state.Hosts...) }

// Host returns the host named name.
func (l *Lab) Host(name string) (Host, error) {
	for _, h := range l.state.Hosts {
		if h.Name == name {
			return h, nil
		}
	}
	return Host{}, fmt.Errorf("lab %s has no host %q", l.state.Name, name)
}

// Load reads the state of the lab named name under root ("" for the default).
func Load(root, name string) (*Lab, error) {
	if root == "" {
		root = DefaultRoot
	}
	if name == "" {
		name = DefaultName
	}
	st, err := readState(filepath.Join(root, name))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("lab %s is not up (no state in %s)", name, filepath.Join(root, name))
	}
	if errors.Is(err, os.ErrPermission) {
		return nil, fmt.Errorf("lab %s: its state in %s is readable by root only (run it with sudo)", name, filepath.Join(root, name))
	}
	if err != nil {
		return nil, err
	}
	return &Lab{state: st, log: hclog.NewNullLogger()}, nil
}

// SetLogger sets the logger used by Down and Exec.
func (l *Lab) SetLogger(log hclog.Logger) {
	if log != nil {
		l.log = log
	}
}

// Down removes the lab named in opts (see (*Lab).Down), whether or not its
// state can be read.
func Down(ctx context.Context, opts Options) error {
	if err := requireRoot("lab down", "removes namespaces, a bridge and veths"); err != nil {
		return err
	}
	if err := opts.defaults(); err != nil {
		return err
	}
	return teardown(ctx, opts.Root, opts.Name, opts.Log)
}

// Down kills the hosts' processes, deletes the bridge and veths and removes
// the state dir. It works after a crash: besides the recorded PIDs it sweeps
// interfaces by the lab's own names.
func (l *Lab) Down(ctx context.Context) error {
	if err := requireRoot("lab down", "removes namespaces, a bridge and veths"); err != nil {
		return err
	}
	return teardown(ctx, filepath.Dir(l.state.Dir), l.state.Name, l.log)
}

// Status is a snapshot of the lab for `mig lab status`.
type Status struct {
	Name       string       `json:"name"`
	Dir        string       `json:"dir"`
	Subnet     string       `json:"subnet"`
	Bridge     string       `json:"bridge"`
	Gateway    string       `json:"gateway"`
	HostsFile  string       `json:"hosts_file"`
	Identity   string       `json:"identity"`
	KnownHosts string       `json:"known_hosts"`
	Hosts      []HostStatus `json:"hosts"`
}

// HostStatus is one host in a Status.
type HostStatus struct {
	Host
	Alive bool `json:"alive"` // its init runs
	SSHD  bool `json:"sshd"`  // its sshd answers
}

// Status checks every host.
func (l *Lab) Status(ctx context.Context) Status {
	st := Status{
		Name: l.state.Name, Dir: l.state.Dir, Subnet: l.state.Subnet, Bridge: l.state.Bridge,
		Gateway: l.state.Gateway, HostsFile: l.HostsFile(), Identity: l.Identity(), KnownHosts: l.KnownHosts(),
	}
	for _, h := range l.state.Hosts {
		hs := HostStatus{Host: h, Alive: h.alive()}
		hs.SSHD = hs.Alive && sshBanner(ctx, net.JoinHostPort(h.IP, "22")) == nil
		st.Hosts = append(st.Hosts, hs)
	}
	return st
}
