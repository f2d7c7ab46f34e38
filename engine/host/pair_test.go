package host

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/hashicorp/hcl/v2/hclparse"
)

// The end-to-end copy tests run between two SSH hosts: those of the hosts
// file named by MIG_TEST_HOSTS (such as the hosts.hcl `mig lab up` writes),
// or else two hosts of a private sshd. They create their files on the hosts
// through actions, so they work whether or not the hosts share this
// machine's filesystem.

// openHosts opens the first two hosts of a hosts file through Family.
func openHosts(file string, log hclog.Logger) ([]Host, error) {
	f, diags := hclparse.NewParser().ParseHCLFile(file)
	if diags.HasErrors() {
		return nil, diags
	}
	content, diags := f.Body.Content(&hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{{Type: "host", LabelNames: []string{"name"}}}})
	if diags.HasErrors() {
		return nil, diags
	}
	fam := Family{Actions: Table(Builtin()), Log: log}
	var hosts []Host
	for _, b := range content.Blocks {
		cfg, diags := hcldec.Decode(b.Body, fam.Spec(), nil)
		if diags.HasErrors() {
			return nil, diags
		}
		h, err := fam.Open(b.Labels[0], cfg)
		if err != nil {
			return nil, err
		}
		hosts = append(hosts, h)
		if len(hosts) == 2 {
			return hosts, nil
		}
	}
	return nil, fmt.Errorf("%s: want two hosts", file)
}

// hostsFile writes a hosts file for two hosts, src and dst, on this sshd.
func (s *testSSHD) hostsFile(t testing.TB) string {
	var b strings.Builder
	for _, name := range []string{"src", "dst"} {
		fmt.Fprintf(&b, "host %q {\n  work_dir = %q\n  ssh {\n    address = %q\n    user = \"root\"\n    identity_file = %q\n    known_hosts = %q\n  }\n}\n",
			name, filepath.Join(s.Dir, "work"), s.Address, s.Identity, s.KnownHosts)
	}
	p := filepath.Join(s.Dir, "hosts.hcl")
	must(t, os.WriteFile(p, []byte(b.String()), 0o600))
	return p
}

// pair is two SSH hosts and a scratch directory on each.
type pair struct {
	src, dst *SSH
	file     string // the hosts file
	scratch  string // same path on both hosts
}

func testPair(t testing.TB) *pair {
	t.Helper()
	file := os.Getenv("MIG_TEST_HOSTS")
	if file == "" {
		file = startSSHD(t).hostsFile(t)
	}
	hosts, err := openHosts(file, testLog(t))
	must(t, err)
	p := &pair{src: hosts[0].(*SSH), dst: hosts[1].(*SSH), file: file}
	b := make([]byte, 6)
	rand.Read(b)
	p.scratch = "/tmp/mig-host-test-" + hex.EncodeToString(b)
	t.Cleanup(func() {
		for _, h := range hosts {
			ActRemove.Call(context.Background(), h, RemoveRequest{Path: p.scratch, Recursive: true}, nil, CallOpts{})
			h.Close()
		}
	})
	return p
}

// stage writes size random bytes to path on h and returns their sha256.
func stage(t testing.TB, h Host, path string, size int64) string {
	t.Helper()
	ctx := context.Background()
	must(t, ActMkdir.Call(ctx, h, MkdirRequest{Path: filepath.Dir(path)}, nil, CallOpts{}))
	var res ExecResult
	argv := []string{"dd", "if=/dev/urandom", "of=" + path, "bs=1M", "count=" + strconv.FormatInt(size>>20, 10)}
	must(t, ActExec.Call(ctx, h, ExecRequest{Argv: argv}, &res, CallOpts{}))
	if res.ExitCode != 0 {
		t.Fatalf("%v: %s", argv, res.Stderr)
	}
	var sum SumResult
	must(t, ActSum.Call(ctx, h, PathRequest{Path: path}, &sum, CallOpts{}))
	return sum.SHA256
}

func remoteStat(t testing.TB, h Host, path string) StatResult {
	var st StatResult
	must(t, ActStat.Call(context.Background(), h, PathRequest{Path: path}, &st, CallOpts{}))
	return st
}

func TestCopyBig(t *testing.T) {
	if testing.Short() {
		t.Skip("copies 512 MiB")
	}
	p := testPair(t)
	in, out := p.scratch+"/in/big", p.scratch+"/out/big"
	want := stage(t, p.src, in, 512<<20)
	var last Progress
	res, err := Copy(context.Background(), p.src, in, p.dst, out, func(pr Progress) { last = pr })
	must(t, err)
	if res.SHA256 != want || res.Bytes != 512<<20 {
		t.Fatalf("copy result %+v, want sha256 %s", res, want)
	}
	var got SumResult
	must(t, ActSum.Call(context.Background(), p.dst, PathRequest{Path: out}, &got, CallOpts{}))
	if got.SHA256 != want {
		t.Fatalf("destination sha256 %s, want %s", got.SHA256, want)
	}
	if last.Done != res.Bytes || last.Rate <= 0 {
		t.Fatalf("last progress %+v", last)
	}
	t.Logf("512 MiB in %.2fs: %.0f MB/s", res.Seconds, float64(res.Bytes)/res.Seconds/1e6)
}

// Cutting either connection midway leaves nothing that looks complete, the
// error names the host that was cut, and a retry succeeds and cleans up
// after the failed attempt.
func TestCopyCutThenRetry(t *testing.T) {
	p := testPair(t)
	size := int64(256 << 20)
	if testing.Short() {
		size = 64 << 20
	}
	in := p.scratch + "/in/big"
	want := stage(t, p.src, in, size)
	for _, side := range []string{"src", "dst"} {
		t.Run(side, func(t *testing.T) {
			hosts, err := openHosts(p.file, testLog(t))
			must(t, err)
			src, dst := hosts[0].(*SSH), hosts[1].(*SSH)
			defer src.Close()
			defer dst.Close()
			victim := map[string]*SSH{"src": src, "dst": dst}[side]
			out := p.scratch + "/out-" + side + "/big"
			var cut atomic.Bool
			_, err = Copy(context.Background(), src, in, dst, out, func(pr Progress) {
				// Reports come at most every 200ms: cut at the first one.
				if pr.Done < size && !cut.Swap(true) {
					victim.current().client.Close() // the network goes away
				}
			})
			if err == nil || !strings.Contains(err.Error(), `host "`+victim.Name()+`"`) {
				t.Fatalf("cut copy: %v", err)
			}
			t.Logf("cut copy: %v", err)
			hosts, err = openHosts(p.file, testLog(t))
			must(t, err)
			defer hosts[0].Close()
			defer hosts[1].Close()
			if st := remoteStat(t, hosts[1], out); st.Exists {
				t.Fatal("a cut copy left a complete-looking file")
			}
			res, err := Copy(context.Background(), hosts[0], in, hosts[1], out, nil)
			must(t, err)
			if res.SHA256 != want {
				t.Fatalf("retry sha256 %s, want %s", res.SHA256, want)
			}
			// The retry removed what the cut attempt left, if anything was left.
			var ls ExecResult
			must(t, ActExec.Call(context.Background(), hosts[1], ExecRequest{Argv: []string{"ls", "-A", path.Dir(out)}}, &ls, CallOpts{}))
			if strings.TrimSpace(ls.Stdout) != "big" {
				t.Fatalf("destination directory holds %q", ls.Stdout)
			}
		})
	}
}

// A cancelled copy (the step's timeout) stops both sides and leaves no file.
func TestCopyCancelled(t *testing.T) {
	p := testPair(t)
	in, out := p.scratch+"/in/big", p.scratch+"/out/big"
	stage(t, p.src, in, 64<<20)
	ctx, cancel := context.WithCancel(context.Background())
	var once atomic.Bool
	start := time.Now()
	_, err := Copy(ctx, p.src, in, p.dst, out, func(pr Progress) {
		if pr.Done > 0 && !once.Swap(true) {
			cancel()
		}
	})
	if err == nil {
		t.Skip("the copy finished before it could be cancelled")
	}
	if !strings.Contains(err.Error(), "context canceled") {
		t.Fatalf("cancelled copy: %v", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Fatalf("cancel took %v", time.Since(start))
	}
	deadline := time.Now().Add(5 * time.Second)
	for remoteStat(t, p.dst, out).Exists || leftovers(t, p.dst, p.scratch+"/out") {
		if time.Now().After(deadline) {
			t.Fatal("a cancelled copy left files behind")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func leftovers(t testing.TB, h Host, dir string) bool {
	var ls ExecResult
	must(t, ActExec.Call(context.Background(), h, ExecRequest{Argv: []string{"ls", "-A", dir}}, &ls, CallOpts{}))
	return strings.TrimSpace(ls.Stdout) != ""
}

func TestCopyDirect(t *testing.T) {
	p := testPair(t)
	size := int64(512 << 20)
	if testing.Short() {
		size = 16 << 20
	}
	in, out := p.scratch+"/in/big", p.scratch+"/out/direct"
	want := stage(t, p.src, in, size)
	ip, _, _ := net.SplitHostPort(p.dst.Address())
	var last Progress
	res, err := CopyWith(context.Background(), p.src, in, p.dst, out, CopyOptions{Direct: ip, Progress: func(pr Progress) { last = pr }})
	must(t, err)
	var got SumResult
	must(t, ActSum.Call(context.Background(), p.dst, PathRequest{Path: out}, &got, CallOpts{}))
	if res.SHA256 != want || got.SHA256 != want || last.Done != size {
		t.Fatalf("direct copy %+v, destination %s, want %s; progress %+v", res, got.SHA256, want, last)
	}
	t.Logf("%d MiB direct in %.2fs: %.0f MB/s", size>>20, res.Seconds, float64(res.Bytes)/res.Seconds/1e6)
}

// strangerFirst is a source host that, before the source connects to a
// direct receiver, has strangers connect to it from this machine: one
// that stays silent and one that completes TLS and sends a wrong token.
type strangerFirst struct {
	Host
	t       *testing.T
	tried   atomic.Int32
	refused atomic.Int32
}

func (s *strangerFirst) Call(ctx context.Context, action string, req, resp any, opts CallOpts) error {
	if r, ok := req.(SendRequest); ok && action == ActSend.Name && r.Connect != "" {
		s.tried.Add(1)
		if silent, err := net.Dial("tcp", r.Connect); err == nil {
			defer silent.Close()
		}
		bad := ticket{Fingerprint: r.Fingerprint, Token: strings.Repeat("0", len(r.Token))}
		if c, err := dialDirect(ctx, r.Connect, bad); err == nil {
			// The receiver closes the connection: from another address at
			// once, from an admitted one after reading the wrong token.
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Read(make([]byte, 1)); err != nil {
				s.refused.Add(1)
			}
			c.Close()
		} else {
			s.refused.Add(1)
		}
	}
	return s.Host.Call(ctx, action, req, resp, opts)
}

// A stranger who connects to the direct receiver before the source is
// refused, and the copy still lands.
func TestCopyDirectStrangerFirst(t *testing.T) {
	p := testPair(t)
	in, out := p.scratch+"/in/small", p.scratch+"/out/stranger"
	want := stage(t, p.src, in, 4<<20)
	ip, _, _ := net.SplitHostPort(p.dst.Address())
	src := &strangerFirst{Host: p.src, t: t}
	res, err := CopyWith(context.Background(), src, in, p.dst, out, CopyOptions{Direct: ip})
	must(t, err)
	if src.tried.Load() != 1 || src.refused.Load() != 1 {
		t.Fatalf("the strangers did not try (%d) or were not refused (%d)", src.tried.Load(), src.refused.Load())
	}
	var got SumResult
	must(t, ActSum.Call(context.Background(), p.dst, PathRequest{Path: out}, &got, CallOpts{}))
	if res.SHA256 != want || got.SHA256 != want {
		t.Fatalf("copy %+v, destination %s, want %s", res, got.SHA256, want)
	}
}
