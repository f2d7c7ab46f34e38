package steps

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"

	"github.com/mig-project/mig/engine/host"
	"github.com/mig-project/mig/engine/nettest"
)

// decode decodes a step body written in HCL against kind's spec.
func decode(t *testing.T, kind Kind, src string, vars map[string]cty.Value) cty.Value {
	t.Helper()
	v, diags := decodeDiags(t, kind, src, vars)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	return v
}

// decodeDiags decodes src with kind's spec, which runs its argument checks.
func decodeDiags(t *testing.T, kind Kind, src string, vars map[string]cty.Value) (cty.Value, hcl.Diagnostics) {
	t.Helper()
	f, diags := hclsyntax.ParseConfig([]byte(src), "test.hcl", hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	return hcldec.Decode(f.Body, kind.Spec(), &hcl.EvalContext{Variables: vars})
}

func testEnv(t *testing.T, hosts ...host.Host) Env {
	log := hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Debug, Output: testLogWriter{t}})
	return Env{
		Log: log,
		Hosts: func(name string) (host.Host, error) {
			for _, h := range hosts {
				if h.Name() == name {
					return h, nil
				}
			}
			return nil, fmt.Errorf("no host %q", name)
		},
	}
}

type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func applyVerify(t *testing.T, src string, timeout time.Duration, hosts ...host.Host) (cty.Value, error) {
	t.Helper()
	cfg := decode(t, Verify{}, src, nil)
	if _, diags := (Verify{}).Plan(context.Background(), cfg, testEnv(t, hosts...)); diags.HasErrors() {
		t.Fatalf("plan: %v", diags)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	res, err := Verify{}.Apply(ctx, cfg, testEnv(t, hosts...))
	return res.Outputs, err
}

func TestVerifyHTTP(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c := n.Add(1); c < 4 {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "count=%d\n", n.Load())
	}))
	defer srv.Close()

	out, err := applyVerify(t, fmt.Sprintf(`
		http {
		  url        = "%s/"
		  body_regex = "^count=[0-9]+"
		}
		interval = "10ms"`, srv.URL), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !out.GetAttr("ok").True() || out.GetAttr("attempts").AsBigFloat().String() != "4" {
		t.Errorf("outputs: %#v", out)
	}
	if last := out.GetAttr("last").AsString(); !strings.Contains(last, "HTTP 200") || !strings.Contains(last, "count=4") {
		t.Errorf("last = %q", last)
	}

	// A check that never passes fails when the context ends, with what it
	// saw last.
	_, err = applyVerify(t, fmt.Sprintf(`
		http {
		  url    = "%s/"
		  status = 204
		}
		interval = "20ms"`, srv.URL), time.Second)
	if err == nil || !strings.Contains(err.Error(), "HTTP 200") || !strings.Contains(err.Error(), "deadline") {
		t.Errorf("err = %v", err)
	}

	// A service that speaks another protocol (Redis answers -ERR): the
	// error says which check to use.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			// As Redis does: it answers the request line, once read.
			// An answer before the request is an HTTP client's idle
			// connection closing, not a reply.
			go func() {
				defer c.Close()
				bufio.NewReader(c).ReadString('\n')
				c.Write([]byte("-ERR unknown command 'GET'\r\n"))
			}()
		}
	}()
	_, err = applyVerify(t, fmt.Sprintf(`
		http { url = "http://%s/check" }
		interval = "20ms"`, l.Addr()), 500*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "does not speak HTTP: check it with tcp { address send expect }") {
		t.Errorf("a service that does not speak HTTP: %v", err)
	}
}

func TestVerifyTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if _, err := applyVerify(t, fmt.Sprintf(`tcp { address = %q }`, addr), 2*time.Second); err != nil {
		t.Error(err)
	}
	ln.Close()
	_, err = applyVerify(t, fmt.Sprintf(`
		tcp { address = %q }
		interval = "10ms"`, addr), time.Second) // room for a loaded machine

	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("closed port: %v", err)
	}
}

// TestVerifyUDP: a PING/PONG service over UDP passes; once its socket is
// closed, the datagrams are refused.
func TestVerifyUDP(t *testing.T) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	go nettest.AnswerUDP(c, "PING", "+PONG")
	addr := c.LocalAddr().String()
	check := fmt.Sprintf(`
		udp {
		  address = %q
		  send    = "PING"
		  expect  = "+PONG"
		}
		interval = "10ms"`, addr)
	if out, err := applyVerify(t, check, 2*time.Second); err != nil || !strings.Contains(out.GetAttr("last").AsString(), "+PONG") {
		t.Errorf("verify: %v", err)
	}
	c.Close()
	if _, err := applyVerify(t, check, time.Second); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("closed port: %v", err)
	}
}

// TestVerifyTCPExchange: a PING/PONG service that answers "-LOADING"
// until its third client.
func TestVerifyTCPExchange(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for n := 1; ; n++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(n int) {
				defer c.Close()
				buf := make([]byte, 64)
				if k, _ := c.Read(buf); string(buf[:k]) != "PING\r\n" {
					return
				}
				if n < 3 {
					c.Write([]byte("-LOADING\r\n"))
					return
				}
				c.Write([]byte("+PONG\r\n"))
			}(n)
		}
	}()
	out, err := applyVerify(t, fmt.Sprintf(`
		tcp {
		  address = %q
		  send    = "PING\r\n"
		  expect  = "+PONG"
		}
		interval = "10ms"`, ln.Addr()), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if out.GetAttr("attempts").AsBigFloat().String() != "3" || !strings.Contains(out.GetAttr("last").AsString(), "+PONG") {
		t.Errorf("outputs: %#v", out)
	}
	// An answer that never matches fails with what came back.
	_, err = applyVerify(t, fmt.Sprintf(`
		tcp {
		  address = %q
		  send    = "PING\r\n"
		  expect  = "+READY"
		}
		interval = "10ms"`, ln.Addr()), time.Second)
	if err == nil || !strings.Contains(err.Error(), "+PONG") {
		t.Errorf("never matching: %v", err)
	}
}

func TestVerifyOnHost(t *testing.T) {
	local := host.NewLocal("local", host.Table(host.Builtin()), hclog.NewNullLogger())

	out, err := applyVerify(t, fmt.Sprintf(`process {
		  host = "local"
		  pid  = %d
		}`, os.Getpid()), 2*time.Second, local)
	if err != nil || !strings.Contains(out.GetAttr("last").AsString(), "running") {
		t.Errorf("own pid: %v %#v", err, out)
	}

	// A zombie is not alive; once reaped, the PID is gone.
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	src := fmt.Sprintf(`process {
		  host  = "local"
		  pid   = %d
		  alive = false
		}
		interval = "10ms"`, pid)
	out, err = applyVerify(t, src, 2*time.Second, local)
	if err != nil || !strings.Contains(out.GetAttr("last").AsString(), "zombie") {
		t.Errorf("zombie: %v %#v", err, out)
	}
	cmd.Wait()
	out, err = applyVerify(t, src, 2*time.Second, local)
	if err != nil || !strings.Contains(out.GetAttr("last").AsString(), "does not exist") {
		t.Errorf("reaped: %v %#v", err, out)
	}

	// exec passes once its command exits 0.
	flag := filepath.Join(t.TempDir(), "ready")
	time.AfterFunc(100*time.Millisecond, func() { os.WriteFile(flag, nil, 0o600) })
	out, err = applyVerify(t, fmt.Sprintf(`exec {
		  host = "local"
		  argv = ["test", "-e", %q]
		}
		interval = "20ms"`, flag), 2*time.Second, local)
	if err != nil || out.GetAttr("attempts").AsBigFloat().Sign() <= 0 {
		t.Fatalf("exec: %v", err)
	}
	if n, _ := out.GetAttr("attempts").AsBigFloat().Int64(); n < 2 {
		t.Errorf("exec passed after %d attempts, before the file existed", n)
	}
}

func TestVerifyPlan(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{`interval = "1s"`, "exactly one"},
		{`tcp { address = "a:1" }
		  http { url = "http://a/" }`, "exactly one"},
		{`http {
		    url = "http://a/"
		    body_regex = "("
		  }`, "Invalid body_regex"},
		{`http { url = "ftp://a/" }`, "Invalid URL"},
		{`tcp { address = "nohost" }`, "Invalid address"},
		{`tcp { address = "a:1" }
		  interval = "soon"`, "Invalid interval"},
	} {
		// The spec checks the arguments, so `mig validate` reports them.
		_, diags := decodeDiags(t, Verify{}, tc.src, nil)
		if !strings.Contains(diags.Error(), tc.want) {
			t.Errorf("%s: diags %v, want %q", tc.src, diags, tc.want)
		}
	}
	// Unknown values are fine in plan.
	cfg := decode(t, Verify{}, `process {
		  host = "h2"
		  pid  = step.restore.pid
		}`, map[string]cty.Value{"step": cty.ObjectVal(map[string]cty.Value{
		"restore": cty.ObjectVal(map[string]cty.Value{"pid": cty.UnknownVal(cty.Number)}),
	})})
	p, diags := Verify{}.Plan(context.Background(), cfg, testEnv(t))
	if diags.HasErrors() || (Verify{}).Host(cfg) != "h2" || !strings.Contains(p.Notes[0], "(known after apply) is alive") {
		t.Errorf("plan: %+v %v", p, diags)
	}
}
