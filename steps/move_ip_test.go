package steps

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/zclconf/go-cty/cty"

	"github.com/mig-project/mig/engine/host"
	"github.com/mig-project/mig/engine/lab"
	"github.com/mig-project/mig/steps/criu"
	"github.com/mig-project/mig/steps/netaddr"
)

// TestMain lets the test binary be a lab host's init and mig's agent, so
// the lab tests reach their hosts over SSH exactly as mig does.
func TestMain(m *testing.M) {
	criu.GuardMain()
	if len(os.Args) > 2 && os.Args[1] == "lab" && os.Args[2] == "init" {
		os.Exit(lab.Init(os.Args[3:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "agent" {
		actions := host.Table(host.Builtin(), netaddr.Actions())
		log := hclog.New(&hclog.LoggerOptions{Name: "agent", Output: os.Stderr})
		if err := host.Serve(context.Background(), actions, os.Stdin, os.Stdout, log); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// testLab brings up this package's lab (its own name and subnet) and
// dials its hosts over SSH.
func testLab(t *testing.T) (*lab.Lab, []host.Host) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds a lab: skipped in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Fatal("the lab tests need root")
	}
	ctx := context.Background()
	name, subnet := lab.ForTest("labs", "10.79.0.0/24")
	opts := lab.Options{Name: name, Hosts: 2, Subnet: subnet,
		Log: hclog.New(&hclog.LoggerOptions{Name: "lab", Output: testLogWriter{t}})}
	l, err := lab.Up(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Down(context.Background()); err != nil {
			t.Error(err)
		}
	})
	var hosts []host.Host
	for _, h := range l.Hosts() {
		s, err := host.DialSSH(ctx, h.Name, host.SSHConfig{
			Address:      h.IP + ":22",
			User:         "root",
			IdentityFile: l.Identity(),
			KnownHosts:   l.KnownHosts(),
		}, hclog.New(&hclog.LoggerOptions{Name: h.Name, Output: testLogWriter{t}}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		hosts = append(hosts, s)
	}
	return l, hosts
}

// TestMoveIP moves a service address between lab hosts while a client in
// the root namespace keeps requesting it: the client reaches the new host
// at once, because the move announces the address with gratuitous ARP.
func TestMoveIP(t *testing.T) {
	l, hosts := testLab(t)
	ctx := context.Background()
	vip := l.Hosts()[0].IP[:strings.LastIndex(l.Hosts()[0].IP, ".")] + ".100"
	httpd := map[string]int{}
	for _, h := range l.Hosts() {
		www := filepath.Join(h.Dir, "var-lib-mig", "www")
		if err := os.MkdirAll(www, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(www, "index.html"), []byte(h.Name+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		pid, err := l.Start(ctx, h.Name, []string{"busybox", "httpd", "-f", "-p", "8080", "-h", "/var/lib/mig/www"}, lab.StartOptions{})
		if err != nil {
			t.Fatal(err)
		}
		httpd[h.Name] = pid
	}
	// Install the agent on both hosts first, so the move is timed warm.
	for _, h := range hosts {
		t0 := time.Now()
		if err := netaddr.Act.Call(ctx, h, netaddr.Request{Op: "show", Address: vip + "/24", Interface: "eth0"}, nil, host.CallOpts{}); err != nil {
			t.Fatal(err)
		}
		t1 := time.Now()
		if err := netaddr.Act.Call(ctx, h, netaddr.Request{Op: "show", Address: vip + "/24", Interface: "eth0"}, nil, host.CallOpts{}); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: first net.addr call %s, second %s", h.Name(), t1.Sub(t0), time.Since(t1))
	}
	var res netaddr.Result
	if err := netaddr.Act.Call(ctx, hosts[0], netaddr.Request{Op: "add", Address: vip + "/24", Interface: "eth0", Announce: 1}, &res, host.CallOpts{}); err != nil {
		t.Fatal(err)
	}

	url := "http://" + vip + ":8080/"
	verifyOn := func(name string) {
		t.Helper()
		cfg := decode(t, Verify{}, fmt.Sprintf(`
			http {
			  url        = %q
			  body_regex = "^%s\\s*$"
			}
			interval = "10ms"`, url, name), nil)
		vctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if _, err := (Verify{}).Apply(vctx, cfg, testEnv(t)); err != nil {
			t.Fatal(err)
		}
	}
	verifyOn("h1")

	// process and exec checks run on a lab host over SSH.
	hostVals := map[string]cty.Value{}
	for _, h := range hosts {
		hostVals[h.Name()] = cty.ObjectVal(map[string]cty.Value{"name": cty.StringVal(h.Name())})
	}
	vars := map[string]cty.Value{"host": cty.ObjectVal(hostVals)}
	for _, src := range []string{
		fmt.Sprintf(`process {
			host = host.h1
			pid  = %d
		}`, httpd["h1"]),
		`exec {
			host = host.h2
			argv = ["test", "-e", "/var/lib/mig/www/index.html"]
		}`,
	} {
		out, err := Verify{}.Apply(ctx, decode(t, Verify{}, src, vars), testEnv(t, hosts...))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("verify: %s", out.Outputs.GetAttr("last").AsString())
	}

	// A client that keeps asking, with fresh connections, and notes when
	// each host answered.
	probe := &prober{url: url}
	stop := probe.run()
	time.Sleep(200 * time.Millisecond)

	cfg := decode(t, MoveIP{}, fmt.Sprintf(`
		address = "%s/24"
		from    = host.h1
		to      = host.h2`, vip), vars)
	env := testEnv(t, hosts...)
	p, diags := MoveIP{}.Plan(ctx, cfg, env)
	if len(diags) > 0 || (MoveIP{}).Host(cfg) != "h2" || p.Notes[0] != "move "+vip+"/24 from h1:eth0 to h2:eth0 and announce it" ||
		!strings.Contains(p.Notes[1], "is on h1:eth0, and h2:eth0 is up") {
		t.Fatalf("plan: %+v %v", p, diags)
	}
	start := time.Now()
	r, err := MoveIP{}.Apply(ctx, cfg, env)
	if err != nil {
		t.Fatal(err)
	}
	// Without the gratuitous ARP the root namespace would keep sending to
	// h1's MAC address until its neighbour entry expired (many seconds).
	answeredAfter(t, stop, start)
	verifyOn("h2")
	for i, h := range hosts {
		var res netaddr.Result
		if err := netaddr.Act.Call(ctx, h, netaddr.Request{Op: "show", Address: vip + "/24", Interface: "eth0"}, &res, host.CallOpts{}); err != nil {
			t.Fatal(err)
		}
		if res.Present != (i == 1) {
			t.Errorf("%s has the address: %v", h.Name(), res.Present)
		}
	}

	// Undo moves it back.
	if err := r.Undo(ctx); err != nil {
		t.Fatal(err)
	}
	verifyOn("h1")

	// When the target refuses the address, it goes back on the source.
	bad := decode(t, MoveIP{}, fmt.Sprintf(`
		address      = "%s/24"
		from         = host.h1
		to           = host.h2
		to_interface = "nope0"`, vip), vars)
	// Plan, which apply runs first, finds it before anything is frozen.
	if _, diags := (MoveIP{}).Plan(ctx, bad, env); !diags.HasErrors() || !strings.Contains(diags.Error(), `Host h2: it has no interface "nope0"`) {
		t.Errorf("plan of a move to a missing interface: %v", diags)
	}
	if _, err := (MoveIP{}).Apply(ctx, bad, env); err == nil || !strings.Contains(err.Error(), "nope0") {
		t.Errorf("move to a missing interface: %v", err)
	}
	verifyOn("h1")
}

// TestMoveIPv6 moves an IPv6 service address: the target has it at once
// (no duplicate address detection keeps it tentative), and its unsolicited
// neighbour advertisements turn the root namespace's cached entry, which
// points at h1, to h2.
func TestMoveIPv6(t *testing.T) {
	l, hosts := testLab(t)
	ctx := context.Background()
	// A unique local prefix of the lab's own, from its subnet.
	octets := strings.Split(l.Hosts()[0].IP, ".")
	prefix := fmt.Sprintf("fd6d:6967:%s:%s::", octets[1], octets[2])
	vip := prefix + "100"
	if out, err := exec.Command("ip", "-6", "addr", "add", prefix+"1/64", "dev", l.Bridge(), "nodad").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "-6", "addr", "del", prefix+"1/64", "dev", l.Bridge()).Run() })
	for _, h := range l.Hosts() {
		www := filepath.Join(h.Dir, "var-lib-mig", "www6")
		if err := os.MkdirAll(www, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(www, "index.html"), []byte(h.Name+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Start(ctx, h.Name, []string{"busybox", "httpd", "-f", "-p", "8080", "-h", "/var/lib/mig/www6"}, lab.StartOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// The agents are installed first, so that the move is timed warm.
	for _, h := range hosts[1:] {
		if err := netaddr.Act.Call(ctx, h, netaddr.Request{Op: "show", Address: vip + "/64", Interface: "eth0"}, nil, host.CallOpts{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := netaddr.Act.Call(ctx, hosts[0], netaddr.Request{Op: "add", Address: vip + "/64", Interface: "eth0"}, nil, host.CallOpts{}); err != nil {
		t.Fatal(err)
	}
	url := "http://[" + vip + "]:8080/"
	probe := &prober{url: url}
	stop := probe.run()
	time.Sleep(300 * time.Millisecond)

	hostVals := map[string]cty.Value{}
	for _, h := range hosts {
		hostVals[h.Name()] = cty.ObjectVal(map[string]cty.Value{"name": cty.StringVal(h.Name())})
	}
	vars := map[string]cty.Value{"host": cty.ObjectVal(hostVals)}
	cfg := decode(t, MoveIP{}, fmt.Sprintf(`
		address = "%s/64"
		from    = host.h1
		to      = host.h2`, vip), vars)
	env := testEnv(t, hosts...)
	start := time.Now()
	r, err := MoveIP{}.Apply(ctx, cfg, env)
	if err != nil {
		t.Fatal(err)
	}
	// Without the advertisements, the root namespace would send to h1's
	// MAC address until its entry went stale (tens of seconds), and
	// without nodad, h2 would not answer for a second.
	answeredAfter(t, stop, start)
	if err := r.Undo(ctx); err != nil {
		t.Fatal(err)
	}
	var res netaddr.Result
	if err := netaddr.Act.Call(ctx, hosts[0], netaddr.Request{Op: "show", Address: vip + "/64", Interface: "eth0"}, &res, host.CallOpts{}); err != nil || !res.Present {
		t.Errorf("after the undo, h1 has the address: %v (%v)", res.Present, err)
	}
}

// answeredAfter stops the prober 300 ms after a move that started at
// start and has just ended, and checks that h2 answered within 200 ms of
// it, with no longer gap between answers than the move and 200 ms.
func answeredAfter(t *testing.T, stop func() probeSummary, start time.Time) {
	t.Helper()
	moved := time.Now()
	time.Sleep(300 * time.Millisecond)
	seen := stop()
	first, gap := seen.after(moved, "h2")
	t.Logf("move took %s; h2 answered %s after it; longest gap between answers %s; %d requests, %d failed",
		moved.Sub(start), first, gap, seen.n, seen.failed)
	if first < 0 || first > 200*time.Millisecond {
		t.Errorf("h2 answered %s after the move, want < 200ms", first)
	}
	if limit := moved.Sub(start) + 200*time.Millisecond; gap > limit {
		t.Errorf("longest gap between answers: %s, want < %s", gap, limit)
	}
}

type prober struct {
	url  string
	mu   sync.Mutex
	hits []hit
}

type hit struct {
	at   time.Time
	body string // "" when the request failed
}

type probeSummary struct {
	hits      []hit
	n, failed int
}

func (p *prober) run() func() probeSummary {
	done := make(chan struct{})
	finished := make(chan struct{})
	client := &http.Client{Timeout: 50 * time.Millisecond, Transport: &http.Transport{DisableKeepAlives: true}}
	go func() {
		defer close(finished)
		for {
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
			h := hit{at: time.Now()}
			if resp, err := client.Get(p.url); err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				h.body = strings.TrimSpace(string(b))
			}
			p.mu.Lock()
			p.hits = append(p.hits, h)
			p.mu.Unlock()
		}
	}()
	return func() probeSummary {
		close(done)
		<-finished
		s := probeSummary{hits: p.hits, n: len(p.hits)}
		for _, h := range p.hits {
			if h.body == "" {
				s.failed++
			}
		}
		return s
	}
}

// after returns how long after t the first answer from name came (-1 when
// none did), and the longest time without any answer around t.
func (s probeSummary) after(t time.Time, name string) (time.Duration, time.Duration) {
	first := time.Duration(-1)
	var gap time.Duration
	var lastOK time.Time
	for _, h := range s.hits {
		if h.body == "" {
			continue
		}
		if !lastOK.IsZero() && h.at.Sub(lastOK) > gap {
			gap = h.at.Sub(lastOK)
		}
		lastOK = h.at
		if first < 0 && h.body == name && h.at.After(t) {
			first = h.at.Sub(t)
		}
	}
	return first, gap
}
