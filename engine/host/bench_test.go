package host

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// BenchmarkCopySSH measures copy throughput between two SSH hosts (see
// testPair), relayed through this process.
//
//	go test ./engine/host -run '^$' -bench CopySSH -benchtime 4x
//	MIG_TEST_HOSTS=/var/lib/mig-lab/lab/hosts.hcl go test ./engine/host -run '^$' -bench CopySSH -benchtime 4x
func BenchmarkCopySSH(b *testing.B) { benchCopy(b, false) }

// BenchmarkCopySSHDirect is BenchmarkCopySSH with direct (TLS) transfers.
func BenchmarkCopySSHDirect(b *testing.B) { benchCopy(b, true) }

func benchCopy(b *testing.B, direct bool) {
	p := testPair(b)
	var opts CopyOptions
	if direct {
		opts.Direct, _, _ = net.SplitHostPort(p.dst.Address())
	}
	const size = 512 << 20
	in, out := p.scratch+"/in/big", p.scratch+"/out/big"
	stage(b, p.src, in, size)
	ctx := context.Background()
	must(b, ActExec.Call(ctx, p.dst, ExecRequest{Argv: []string{"true"}}, nil, CallOpts{}))
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		if _, err := CopyWith(ctx, p.src, in, p.dst, out, opts); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCopyImages copies a directory shaped like a process's
// checkpoint images (64 files of 4 KiB) between local hosts under
// /var/lib, with and without the destination's fsyncs.
//
//	go test ./engine/host -run '^$' -bench CopyImages
func BenchmarkCopyImages(b *testing.B) {
	if err := os.MkdirAll("/var/lib/mig", 0o700); err != nil {
		b.Skip(err)
	}
	dir, err := os.MkdirTemp("/var/lib/mig", "bench-copy-")
	if err != nil {
		b.Skip(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	src := filepath.Join(dir, "src")
	must(b, os.Mkdir(src, 0o700))
	page := make([]byte, 4096)
	for i := range 64 {
		must(b, os.WriteFile(filepath.Join(src, fmt.Sprintf("core-%d.img", i)), page, 0o600))
	}
	a := NewLocal("a", Table(Builtin()), hclog.NewNullLogger())
	for _, sync := range []bool{true, false} {
		b.Run(fmt.Sprintf("sync=%v", sync), func(b *testing.B) {
			for b.Loop() {
				if _, err := CopyWith(context.Background(), a, src, a, filepath.Join(dir, "out"), CopyOptions{NoSync: !sync}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

const rssChildEnv = "MIG_TEST_RSS_CHILD"

// TestCopyPeakRSS copies 1 GiB between two SSH hosts in a child process
// and reads the child's peak RSS (VmHWM).
func TestCopyPeakRSS(t *testing.T) {
	if testing.Short() {
		t.Skip("copies 1 GiB")
	}
	p := testPair(t)
	in, out := p.scratch+"/in/big", p.scratch+"/out/big"
	stage(t, p.src, in, 1<<30)
	must(t, ActExec.Call(context.Background(), p.dst, ExecRequest{Argv: []string{"true"}}, nil, CallOpts{}))
	exe, _ := os.Executable()
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), rssChildEnv+"=1", "RSS_HOSTS="+p.file, "RSS_SRC="+in, "RSS_DST="+out)
	cmd.Stderr = os.Stderr
	agentKB := make(chan int64, 1)
	done := make(chan struct{})
	sum, err := fileSum(exe)
	must(t, err)
	go func() { agentKB <- watchAgents("/bin/mig-"+sum, done) }()
	stdout, err := cmd.Output()
	close(done)
	akb := <-agentKB
	if err != nil {
		t.Fatalf("child: %v: %s", err, stdout)
	}
	var kb, ms int64
	if _, err := fmt.Sscanf(string(stdout), "VmHWM %d kB %d ms", &kb, &ms); err != nil {
		t.Fatalf("child said %q", stdout)
	}
	t.Logf("1 GiB copied in %d ms (%.0f MB/s); peak RSS of the copying process %.1f MiB, of a mig agent %.1f MiB",
		ms, float64(1<<30)/float64(ms)/1e3, float64(kb)/1024, float64(akb)/1024)
	if akb == 0 {
		t.Error("no agent seen: the peak RSS of the agents was not measured")
	}
	if kb > 64<<10 || akb > 64<<10 {
		t.Errorf("peak RSS %d kB (agents %d kB) is over the 64 MiB target", kb, akb)
	}
}

// watchAgents samples the peak RSS of every running `…/bin/mig-<sum> agent`
// process of this test binary on this machine (lab hosts included) until
// done, and returns the largest.
func watchAgents(suffix string, done chan struct{}) int64 {
	var peak int64
	for {
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
			if err != nil {
				continue
			}
			// The launcher runs the binary from an open file: argv[0] is
			// /proc/self/fd/3, and only the exe link names it.
			args := strings.Split(string(cmdline), "\x00")
			exe, _ := os.Readlink("/proc/" + e.Name() + "/exe")
			if len(args) < 2 || args[1] != "agent" || !strings.HasSuffix(exe, suffix) {
				continue
			}
			status, _ := os.ReadFile("/proc/" + e.Name() + "/status")
			for _, line := range strings.Split(string(status), "\n") {
				if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
					kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
					peak = max(peak, kb)
				}
			}
		}
		select {
		case <-done:
			return peak
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// rssChild runs one copy for TestCopyPeakRSS and prints its peak RSS.
func rssChild() int {
	log := hclog.New(&hclog.LoggerOptions{Name: "rss", Level: hclog.Warn, Output: os.Stderr})
	hosts, err := openHosts(os.Getenv("RSS_HOSTS"), log)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	res, err := Copy(context.Background(), hosts[0], os.Getenv("RSS_SRC"), hosts[1], os.Getenv("RSS_DST"), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 1
	}
	defer f.Close()
	for s := bufio.NewScanner(f); s.Scan(); {
		if v, ok := strings.CutPrefix(s.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			fmt.Printf("VmHWM %d kB %d ms\n", kb, int64(res.Seconds*1000))
			return 0
		}
	}
	return 1
}

// BenchmarkCopyLocal measures fs.send and fs.recv without SSH.
func BenchmarkCopyLocal(b *testing.B) {
	dir := b.TempDir()
	const size = 512 << 20
	makeFile(b, filepath.Join(dir, "big"), size, 5)
	a := NewLocal("a", Table(Builtin()), hclog.NewNullLogger())
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		if _, err := Copy(context.Background(), a, filepath.Join(dir, "big"), a, filepath.Join(dir, "out"), nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCopyDirectLocal measures a direct (TLS) transfer without SSH.
func BenchmarkCopyDirectLocal(b *testing.B) {
	dir := b.TempDir()
	const size = 512 << 20
	makeFile(b, filepath.Join(dir, "big"), size, 5)
	a := NewLocal("a", Table(Builtin()), hclog.NewNullLogger())
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		if _, err := CopyWith(context.Background(), a, filepath.Join(dir, "big"), a, filepath.Join(dir, "out"), CopyOptions{Direct: "127.0.0.1"}); err != nil {
			b.Fatal(err)
		}
	}
}
