package lab

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// The test binary doubles as the hosts' init: Up runs `<binary> lab init …`.
func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == "lab" && os.Args[2] == "init" {
		os.Exit(Init(os.Args[3:]))
	}
	os.Exit(m.Run())
}

// The test lab's name and subnet differ from the defaults so that a demo
// lab can run at the same time.
func testOptions(t *testing.T) Options {
	return Options{
		Name:   "labt",
		Hosts:  2,
		Subnet: "10.78.0.0/24",
		Log:    hclog.New(&hclog.LoggerOptions{Name: "lab", Level: hclog.Debug, Output: testWriter{t}}),
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestOptions(t *testing.T) {
	for _, o := range []Options{{Name: "Lab"}, {Name: "waytoolongname"}, {Subnet: "10.0.0.0/28"}, {Subnet: "fd00::/64"}, {Hosts: 300}} {
		if err := o.defaults(); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
	o := Options{Subnet: "10.78.0.5/24"}
	if err := o.defaults(); err != nil {
		t.Fatal(err)
	}
	if o.Name != "lab" || o.Subnet != "10.78.0.0/24" || o.Hosts != 2 {
		t.Errorf("defaults: %+v", o)
	}
	if got := hostAddr("10.78.0.0/24", 11).String(); got != "10.78.0.11" {
		t.Errorf("hostAddr = %s", got)
	}
	if got := hostAddr("10.0.0.0/16", 300).String(); got != "10.0.1.44" {
		t.Errorf("hostAddr = %s", got)
	}
	if len(vethName("abcdefgh", 200)) > 15 || len(bridgeName("abcdefgh")) > 15 {
		t.Error("interface names longer than IFNAMSIZ")
	}
}

// snapshot is what a lab must leave as it found it.
type snapshot struct {
	links, netns, mounts, children, nft []string
}

func takeSnapshot(t *testing.T) snapshot {
	t.Helper()
	run := func(argv ...string) []string {
		out, err := exec.Command(argv[0], argv[1:]...).Output()
		if err != nil {
			t.Fatalf("%v: %v", argv, err)
		}
		return lines(string(out))
	}
	var s snapshot
	for _, l := range run("ip", "-o", "link") {
		// Keep the index and name; counters and states change on their own.
		if f := strings.Fields(l); len(f) > 1 {
			s.links = append(s.links, f[0]+" "+f[1])
		}
	}
	s.netns = run("ip", "netns", "list")
	s.nft = run("nft", "list", "tables")
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	s.mounts = lines(string(b))
	s.children = children(t)
	return s
}

func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	sort.Strings(out)
	return out
}

// children lists this process's child processes.
func children(t *testing.T) []string {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	me := os.Getpid()
	var out []string
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(me) {
			out = append(out, s[:strings.LastIndexByte(s, ')')+1])
		}
	}
	return out
}

// compare fails on any difference that belongs to the lab. Other engineers'
// tests may add or remove their own links, mounts or tables meanwhile, so
// differences that name none of the lab's markers are only logged.
func compare(t *testing.T, before, after snapshot, markers ...string) {
	t.Helper()
	check := func(what string, a, b []string, strict bool) {
		added, removed := diff(a, b)
		for _, l := range append(added, removed...) {
			ours := strict
			for _, m := range markers {
				ours = ours || strings.Contains(l, m)
			}
			if ours {
				t.Errorf("%s differs after down: %q (added %q, removed %q)", what, l, added, removed)
			} else {
				t.Logf("%s changed, not by the lab: %q", what, l)
			}
		}
	}
	check("links", before.links, after.links, false)
	check("netns", before.netns, after.netns, false)
	check("mounts", before.mounts, after.mounts, false)
	check("nft tables", before.nft, after.nft, false)
	check("child processes", before.children, after.children, true)
}

func diff(a, b []string) (added, removed []string) {
	in := func(s []string, x string) bool {
		i := sort.SearchStrings(s, x)
		return i < len(s) && s[i] == x
	}
	for _, x := range b {
		if !in(a, x) {
			added = append(added, x)
		}
	}
	for _, x := range a {
		if !in(b, x) {
			removed = append(removed, x)
		}
	}
	return added, removed
}

func needLab(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a lab: skipped in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Fatal("the lab tests need root")
	}
}

func markers(o Options) []string {
	return []string{"mig-" + o.Name, "mv-" + o.Name + "-", filepath.Join(DefaultRoot, o.Name), "10.78.0."}
}

func sshArgs(l *Lab, ip string, argv ...string) []string {
	return append([]string{"ssh",
		"-o", "StrictHostKeyChecking=yes",
		"-o", "UserKnownHostsFile=" + l.KnownHosts(),
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "IdentitiesOnly=yes",
		"-o", "BatchMode=yes",
		"-o", "ConnectTimeout=5",
		"-i", l.Identity(),
		"root@" + ip}, argv...)
}

func TestUpDown(t *testing.T) {
	needLab(t)
	ctx := context.Background()
	opts := testOptions(t)
	Down(ctx, opts) // a lab left over from an interrupted run
	before := takeSnapshot(t)
	// A descriptor without close-on-exec, as a careless caller leaks.
	leak, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer leak.Close()
	syscall.Syscall(syscall.SYS_FCNTL, leak.Fd(), syscall.F_SETFD, 0)

	start := time.Now()
	l, err := Up(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("lab up took %s", time.Since(start))
	t.Cleanup(func() { l.Down(context.Background()) })

	hosts := l.Hosts()
	if len(hosts) != 2 || hosts[0].IP != "10.78.0.11" || hosts[1].IP != "10.78.0.12" {
		t.Fatalf("hosts: %+v", hosts)
	}
	if fi, err := os.Stat(l.Identity()); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("identity: %v %v", fi.Mode(), err)
	}
	hcl, err := os.ReadFile(l.HostsFile())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`host "h1"`, `address       = "10.78.0.12:22"`, `identity_file = "` + l.Identity() + `"`, `known_hosts   = "` + l.KnownHosts() + `"`} {
		if !bytes.Contains(hcl, []byte(want)) {
			t.Errorf("hosts.hcl lacks %s:\n%s", want, hcl)
		}
	}

	for _, h := range hosts {
		// The root namespace reaches sshd, and OpenSSH with strict
		// host-key checking logs in with the lab's identity.
		out, err := exec.Command(sshArgs(l, h.IP, "hostname")[0], sshArgs(l, h.IP, "hostname")[1:]...).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != h.Name {
			t.Errorf("ssh %s hostname: %q %v", h.Name, out, err)
		}
		out2, err := l.Output(ctx, h.Name, "hostname")
		if err != nil || strings.TrimSpace(out2) != h.Name {
			t.Errorf("exec %s hostname: %q %v", h.Name, out2, err)
		}
		mounts, err := l.Output(ctx, h.Name, "cat", "/proc/self/mountinfo")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{" /run rw,nosuid,nodev", " /tmp ", " /var/lib/mig ", " /root ", " /proc "} {
			if !strings.Contains(mounts, want) {
				t.Errorf("%s has no %q mount:\n%s", h.Name, want, mounts)
			}
		}
		init, err := l.Output(ctx, h.Name, "cat", "/proc/1/cmdline")
		if err != nil || !strings.Contains(init, "init") {
			t.Errorf("%s: PID 1 is %q %v", h.Name, init, err)
		}
	}
	// The hosts reach each other: h1 logs in to h2.
	out, err := l.Output(ctx, "h1", sshArgs(l, "10.78.0.12", "hostname")...)
	if err != nil || strings.TrimSpace(out) != "h2" {
		t.Errorf("ssh from h1 to h2: %q %v", out, err)
	}
	// A wrong known_hosts is refused.
	bad := filepath.Join(t.TempDir(), "known_hosts")
	kh, _ := os.ReadFile(l.KnownHosts())
	os.WriteFile(bad, bytes.ReplaceAll(kh, []byte("10.78.0.11 "), []byte("10.78.0.99 ")), 0o600)
	args := sshArgs(l, "10.78.0.11", "true")
	for i, a := range args {
		if strings.HasPrefix(a, "UserKnownHostsFile=") {
			args[i] = "UserKnownHostsFile=" + bad
		}
	}
	if err := exec.Command(args[0], args[1:]...).Run(); err == nil {
		t.Error("ssh accepted an unknown host key")
	}

	// A background process is a child of the host's PID 1, with no
	// descriptor leaked from this process.
	pid, err := l.Start(ctx, "h1", []string{"sleep", "1000"}, StartOptions{PIDFile: "/run/sleep.pid"})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := l.Output(ctx, "h1", "cat", "/run/sleep.pid"); err != nil || strings.TrimSpace(got) != strconv.Itoa(pid) {
		t.Errorf("pid file holds %q (%v), want %d", got, err, pid)
	}
	if step := pidStep(2); pid <= step || pid >= 2*step {
		t.Errorf("h1's process has PID %d, outside h1's range from %d", pid, step)
	}
	stat, err := l.Output(ctx, "h1", "cat", fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil || !strings.Contains(stat, "(sleep) S 1 ") {
		t.Errorf("started process: %q %v", stat, err)
	}
	if fds, err := l.Output(ctx, "h1", "ls", fmt.Sprintf("/proc/%d/fd", pid)); err != nil || strings.Join(strings.Fields(fds), " ") != "0 1 2" {
		t.Errorf("started process has descriptors %q (%v), want 0 1 2", fds, err)
	}
	if code, err := l.Exec(ctx, "h2", []string{"test", "-d", fmt.Sprintf("/proc/%d", pid)}, nil, nil, nil); err != nil || code == 0 {
		t.Errorf("h1's pid %d is visible in h2 (exit %d, %v)", pid, code, err)
	}

	// A program in the machine's /tmp is not inside the host: Start says
	// why instead of failing in the host's exec.
	hidden, err := os.CreateTemp("/tmp", "mig-lab-prog-")
	if err != nil {
		t.Fatal(err)
	}
	hidden.Close()
	defer os.Remove(hidden.Name())
	_, err = l.Start(ctx, "h1", []string{hidden.Name()}, StartOptions{})
	if err == nil || !strings.Contains(err.Error(), "not inside the host") || !strings.Contains(err.Error(), "/var/tmp") {
		t.Errorf("start of a program in the machine's /tmp: %v, want an explanation of the private directories", err)
	}

	// Up again is quick and changes nothing.
	start = time.Now()
	l2, err := Up(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("second up took %s", d)
	}
	for i, h := range l2.Hosts() {
		if h != hosts[i] {
			t.Errorf("second up changed host %d: %+v, was %+v", i, h, hosts[i])
		}
	}

	if err := l.Down(ctx); err != nil {
		t.Fatal(err)
	}
	compare(t, before, takeSnapshot(t), markers(opts)...)
	if _, err := os.Stat(l.Dir()); !os.IsNotExist(err) {
		t.Errorf("state dir %s left: %v", l.Dir(), err)
	}
}

func TestCrash(t *testing.T) {
	needLab(t)
	ctx := context.Background()
	opts := testOptions(t)
	Down(ctx, opts)
	before := takeSnapshot(t)

	l, err := Up(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Down(context.Background(), opts) })
	if _, err := l.Start(ctx, "h2", []string{"sleep", "1000"}, StartOptions{}); err != nil {
		t.Fatal(err)
	}

	// A dead host is repaired by the next up.
	h1 := l.Hosts()[0]
	syscall.Kill(h1.PID, syscall.SIGKILL)
	waitGone(ctx, h1)
	l, err = Up(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if l.Hosts()[0].PID == h1.PID {
		t.Error("up did not rebuild the dead host")
	}
	for _, h := range l.Hosts() {
		if err := sshBanner(ctx, net.JoinHostPort(h.IP, "22")); err != nil {
			t.Errorf("after repair: %v", err)
		}
	}

	// Down after every init was killed still cleans up everything,
	// including interfaces named after the lab that the state omits.
	for _, h := range l.Hosts() {
		syscall.Kill(h.PID, syscall.SIGKILL)
	}
	if out, err := exec.Command("ip", "link", "add", "mv-labt-7", "type", "veth", "peer", "name", "mvp-labt-7").CombinedOutput(); err != nil {
		t.Fatalf("add a stray veth: %v: %s", err, out)
	}
	if err := Down(ctx, opts); err != nil {
		t.Fatal(err)
	}
	compare(t, before, takeSnapshot(t), markers(opts)...)
}

func TestNeedsRoot(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("runs as root")
	}
	if _, err := Up(context.Background(), Options{}); err == nil || !strings.Contains(err.Error(), "needs root") {
		t.Errorf("Up as non-root: %v", err)
	}
}
