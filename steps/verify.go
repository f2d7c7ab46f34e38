package steps

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/zclconf/go-cty/cty"

	"github.com/mig-project/mig/engine"
	"github.com/mig-project/mig/engine/args"
	"github.com/mig-project/mig/engine/host"
)

// Verify polls one check until it passes or the step's context ends (the
// engine's `timeout` meta-argument bounds each attempt):
//
//	step "verify" "up" {
//	  http { url = "http://10.77.0.100:8080/check"  status = 200  body_regex = "^ok" }
//	  # or: tcp { address = "10.77.0.100:6379"  send = "PING\r\n"  expect = "+PONG" }
//	  # or: udp { address = "10.77.0.100:53"  send = "…"  expect = "…" }
//	  # or: process { host = host.h2  pid = step.restore.pid  alive = true }
//	  # or: exec { host = host.h2  argv = ["test", "-e", "/run/ready"] }
//	  interval = "100ms"
//	}
//
// http, tcp and udp checks run from the orchestrator; process and exec checks
// run on the host through its "exec" action. A process check with
// alive = false passes once the process is gone.
type Verify struct{}

// verifyArgs are a verify step's arguments: exactly one check block and
// the polling interval.
type verifyArgs struct {
	HTTP     *httpCheck    `arg:"http,block"`
	TCP      *tcpCheck     `arg:"tcp,block"`
	UDP      *udpCheck     `arg:"udp,block"`
	Process  *processCheck `arg:"process,block"`
	Exec     *execCheck    `arg:"exec,block"`
	Interval time.Duration `arg:"interval,positive" default:"100ms"`
}

type httpCheck struct {
	URL       httpURL `arg:"url,required"`
	Status    int     `arg:"status" min:"100" max:"599" default:"200"`
	BodyRegex pattern `arg:"body_regex"`
}

type tcpCheck struct {
	Address hostPort `arg:"address,required"`
	Send    string   `arg:"send"`
	Expect  string   `arg:"expect"`
}

type udpCheck struct {
	Address hostPort `arg:"address,required"`
	Send    string   `arg:"send,required"`
	Expect  string   `arg:"expect"`
}

type processCheck struct {
	Host  hostRef `arg:"host,required"`
	PID   int64   `arg:"pid,required" min:"1"`
	Alive bool    `arg:"alive" default:"true"`
}

type execCheck struct {
	Host hostRef `arg:"host,required"`
	Argv argv    `arg:"argv,required"`
}

func (a *verifyArgs) Check(cfg cty.Value) hcl.Diagnostics {
	_, diags := verifyWhich(cfg)
	return diags
}

func (Verify) Spec() hcldec.Spec { return args.Spec[verifyArgs]() }

func (Verify) Outputs() cty.Type {
	return cty.Object(map[string]cty.Type{
		"ok":       cty.Bool,
		"attempts": cty.Number,
		"seconds":  cty.Number,
		"last":     cty.String,
	})
}

// verifyChecks are the check blocks, exactly one of which must be set.
var verifyChecks = []string{"http", "tcp", "udp", "process", "exec"}

// Host is where the step runs: the host of its process or exec check;
// http, tcp and udp checks run here, as clients do.
func (Verify) Host(cfg cty.Value) string {
	for _, which := range []string{"process", "exec"} {
		if h := HostName(Attr(Attr(cfg, which), "host")); h != "" {
			return h
		}
	}
	return ""
}

func (Verify) Plan(ctx context.Context, cfg cty.Value, env Env) (Preview, hcl.Diagnostics) {
	var p Preview
	which, diags := verifyWhich(cfg)
	if diags.HasErrors() {
		return p, diags
	}
	b := cfg.GetAttr(which)
	switch which {
	case "http":
		p.Notes = append(p.Notes, fmt.Sprintf("GET %s until it answers %d", known(Attr(b, "url")), Int(b, "status", 200)))
	case "tcp", "udp":
		a := Attr(b, "address")
		note := "connect to " + known(a)
		if which == "udp" {
			note = "send datagrams to " + known(a)
		}
		if send := Attr(b, "send"); !send.IsNull() {
			note += ", send " + strconv.Quote(known(send))
		}
		if exp := Attr(b, "expect"); !exp.IsNull() {
			note += ", expect " + strconv.Quote(known(exp))
		}
		p.Notes = append(p.Notes, note)
	case "process":
		state := "alive"
		if !Bool(b, "alive", true) {
			state = "gone"
		}
		p.Notes = append(p.Notes, fmt.Sprintf("wait until pid %s is %s", known(Attr(b, "pid")), state))
	case "exec":
		p.Notes = append(p.Notes, "run "+known(Attr(b, "argv"))+" until it exits 0")
	}
	return p, diags
}

// known renders a value for a preview, "(known after apply)" when unknown.
func known(v cty.Value) string {
	switch {
	case !v.IsKnown():
		return "(known after apply)"
	case v.IsNull():
		return "(null)"
	case v.Type() == cty.String:
		return v.AsString()
	case v.Type() == cty.Number:
		return v.AsBigFloat().Text('f', -1)
	case v.CanIterateElements():
		var parts []string
		for it := v.ElementIterator(); it.Next(); {
			_, e := it.Element()
			parts = append(parts, known(e))
		}
		return "[" + strings.Join(parts, " ") + "]"
	}
	return v.GoString()
}

func verifyWhich(cfg cty.Value) (string, hcl.Diagnostics) {
	var set []string
	for _, name := range verifyChecks {
		if v := Attr(cfg, name); !v.IsNull() {
			set = append(set, name)
		}
	}
	if len(set) != 1 {
		return "", hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Need exactly one check",
			Detail:   fmt.Sprintf("A verify step takes exactly one of the blocks http, tcp, udp, process or exec; this one has %d.", len(set)),
		}}
	}
	return set[0], nil
}

// probe runs a check once. It returns whether the check passed and what it
// saw; a non-nil error means the check cannot work and polling stops.
type probe func(ctx context.Context) (bool, string, error)

func (Verify) Apply(ctx context.Context, cfg cty.Value, env Env) (Result, error) {
	which, diags := verifyWhich(cfg)
	if diags.HasErrors() {
		return Result{}, diags
	}
	var arg verifyArgs
	args.Decode(cfg, &arg)
	interval := arg.Interval
	var check probe
	var what string
	var err error
	switch which {
	case "http":
		check, what, err = httpProbe(*arg.HTTP)
	case "tcp":
		c := engine.TCPCheck{Address: string(arg.TCP.Address), Send: arg.TCP.Send, Expect: arg.TCP.Expect}
		what = c.Address
		check = dialProbe(c)
	case "udp":
		c := engine.UDPCheck{Address: string(arg.UDP.Address), Send: arg.UDP.Send, Expect: arg.UDP.Expect}
		what = "udp://" + c.Address
		check = dialProbe(c)
	case "process":
		check, what, err = processProbe(env, *arg.Process)
	case "exec":
		check, what, err = execProbe(env, *arg.Exec)
	}
	if err != nil {
		return Result{}, err
	}

	start := time.Now()
	attempts := 0
	last := ""
	for {
		attempts++
		ok, seen, err := check(ctx)
		// An attempt cut short by the step's own deadline saw nothing of
		// the service: report the one before it. A dial sets the deadline
		// on its socket, so it can time out before ctx.Err says so.
		if ok || !expired(ctx) || last == "" {
			last = seen
		}
		if err != nil {
			return Result{}, fmt.Errorf("verify %s: %w", what, err)
		}
		if ok {
			secs := time.Since(start).Seconds()
			env.Log.Debug("verify passed", "check", what, "attempts", attempts, "seconds", secs)
			return Result{
				Outputs: cty.ObjectVal(map[string]cty.Value{
					"ok":       cty.True,
					"attempts": Num(int64(attempts)),
					"seconds":  cty.NumberFloatVal(secs),
					"last":     cty.StringVal(last),
				}),
				Metrics: map[string]float64{"seconds": secs, "attempts": float64(attempts)},
			}, nil
		}
		env.Log.Trace("verify not yet", "check", what, "attempt", attempts, "last", last)
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return Result{}, fmt.Errorf("verify %s: not passing after %d attempts in %.1fs (%v); last: %s",
				what, attempts, time.Since(start).Seconds(), ctx.Err(), last)
		case <-t.C:
		}
	}
}

// expired reports whether ctx has ended or its deadline has passed.
func expired(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	d, ok := ctx.Deadline()
	return ok && !time.Now().Before(d)
}

// requestTimeout bounds one HTTP request or TCP connect.
const requestTimeout = 5 * time.Second

func httpProbe(c httpCheck) (probe, string, error) {
	u := string(c.URL)
	want := c.Status
	var re *regexp.Regexp
	if s := string(c.BodyRegex); s != "" {
		var err error
		if re, err = regexp.Compile(s); err != nil {
			return nil, "", fmt.Errorf("body_regex: %w", err)
		}
	}
	// A fresh connection each time: the check is whether the service
	// answers now, not whether an old connection survived.
	client := &http.Client{
		Timeout:   requestTimeout,
		Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	return func(ctx context.Context) (bool, string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return false, "", err
		}
		resp, err := client.Do(req)
		if err != nil {
			return false, err.Error() + notHTTP(err), nil
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil {
			return false, fmt.Sprintf("HTTP %d, reading body: %v", resp.StatusCode, err), nil
		}
		seen := fmt.Sprintf("HTTP %d, %d bytes: %s", resp.StatusCode, len(body), excerpt(string(body)))
		if resp.StatusCode != want {
			return false, seen, nil
		}
		if re != nil && !re.Match(body) {
			return false, seen + " (body does not match " + strconv.Quote(re.String()) + ")", nil
		}
		return true, seen, nil
	}, u, nil
}

// notHTTP hints at the fix when a service answered, but not in HTTP (a
// database, a cache): the check should speak its protocol.
func notHTTP(err error) string {
	if strings.Contains(err.Error(), "malformed HTTP") {
		return " (the service does not speak HTTP: check it with tcp { address send expect } instead)"
	}
	return ""
}

// dialProbe polls an exchange with a service, over TCP (engine.TCPCheck)
// or UDP (engine.UDPCheck), from a new connection or socket each time.
func dialProbe(c interface {
	Dial(context.Context, time.Duration) (string, error)
}) probe {
	return func(ctx context.Context) (bool, string, error) {
		seen, err := c.Dial(ctx, requestTimeout)
		if err != nil {
			return false, err.Error(), nil
		}
		return true, seen, nil
	}
}

func processProbe(env Env, c processCheck) (probe, string, error) {
	h, err := HostOf(env, c.Host.Value)
	if err != nil {
		return nil, "", err
	}
	pid := c.PID
	if pid <= 0 {
		return nil, "", fmt.Errorf("pid %d is not a process ID", pid)
	}
	wantAlive := c.Alive
	what := fmt.Sprintf("pid %d on %s", pid, h.Name())
	return func(ctx context.Context) (bool, string, error) {
		var res host.ExecResult
		req := host.ExecRequest{Argv: []string{"cat", fmt.Sprintf("/proc/%d/stat", pid)}, MaxBytes: 4096}
		if err := host.ActExec.Call(ctx, h, req, &res, host.CallOpts{}); err != nil {
			return false, err.Error(), nil
		}
		alive, seen := procState(pid, res)
		return alive == wantAlive, seen, nil
	}, what, nil
}

// procState reads the state letter from a /proc/PID/stat read.
func procState(pid int64, res host.ExecResult) (bool, string) {
	if res.ExitCode != 0 {
		return false, fmt.Sprintf("pid %d does not exist", pid)
	}
	i := strings.LastIndexByte(res.Stdout, ')')
	f := strings.Fields(res.Stdout[i+1:])
	if i < 0 || len(f) == 0 {
		return false, fmt.Sprintf("pid %d: unreadable stat %q", pid, excerpt(res.Stdout))
	}
	name := res.Stdout[strings.IndexByte(res.Stdout, '(')+1 : i]
	switch f[0] {
	case "Z", "X", "x":
		return false, fmt.Sprintf("pid %d (%s) is a zombie", pid, name)
	}
	return true, fmt.Sprintf("pid %d (%s) is running, state %s", pid, name, f[0])
}

func execProbe(env Env, c execCheck) (probe, string, error) {
	h, err := HostOf(env, c.Host.Value)
	if err != nil {
		return nil, "", err
	}
	argv := []string(c.Argv)
	if len(argv) == 0 {
		return nil, "", errors.New("empty argv")
	}
	what := fmt.Sprintf("%s on %s", strings.Join(argv, " "), h.Name())
	return func(ctx context.Context) (bool, string, error) {
		var res host.ExecResult
		req := host.ExecRequest{Argv: argv, MaxBytes: 4096}
		if err := host.ActExec.Call(ctx, h, req, &res, host.CallOpts{}); err != nil {
			return false, err.Error(), nil
		}
		seen := fmt.Sprintf("exit %d", res.ExitCode)
		if out := excerpt(res.Stderr + res.Stdout); out != "" {
			seen += ": " + out
		}
		return res.ExitCode == 0, seen, nil
	}, what, nil
}

// excerpt shortens s to one line of at most 200 bytes.
func excerpt(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + " …"
	}
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
