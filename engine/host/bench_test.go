package host

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// BenchmarkCopySSH measures copy throughput between two SSH hosts (two
// connections to one sshd on 127.0.0.1), relayed through this process.
//
//	go test ./engine/host -run '^$' -bench CopySSH -benchtime 4x
func BenchmarkCopySSH(b *testing.B) {
	sshd := startSSHD(b)
	src, dst := sshd.host(b, "src"), sshd.host(b, "dst")
	dir := b.TempDir()
	const size = 512 << 20
	makeFile(b, filepath.Join(dir, "big"), size, 5)
	ctx := context.Background()
	// Install the agent outside the timed loop.
	must(b, src.Call(ctx, "exec", ExecRequest{Argv: []string{"true"}}, nil, CallOpts{}))
	must(b, dst.Call(ctx, "exec", ExecRequest{Argv: []string{"true"}}, nil, CallOpts{}))
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		if _, err := Copy(ctx, src, filepath.Join(dir, "big"), dst, filepath.Join(dir, "out"), nil); err != nil {
			b.Fatal(err)
		}
	}
}

const rssChildEnv = "MIG_TEST_RSS_CHILD"

// TestCopyPeakRSS copies 1 GiB between two SSH hosts in a child process
// and reads the child's peak RSS (VmHWM).
func TestCopyPeakRSS(t *testing.T) {
	if testing.Short() {
		t.Skip("copies 1 GiB")
	}
	sshd := startSSHD(t)
	// Install the agent first so the child only copies.
	must(t, sshd.host(t, "src").Call(context.Background(), "exec", ExecRequest{Argv: []string{"true"}}, nil, CallOpts{}))
	dir := t.TempDir()
	makeFile(t, filepath.Join(dir, "big"), 1<<30, 6)
	exe, _ := os.Executable()
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(),
		rssChildEnv+"=1",
		"RSS_ADDR="+sshd.Address, "RSS_ID="+sshd.Identity, "RSS_KH="+sshd.KnownHosts,
		"RSS_WORK="+filepath.Join(sshd.Dir, "work"),
		"RSS_SRC="+filepath.Join(dir, "big"), "RSS_DST="+filepath.Join(dir, "out"))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v: %s", err, out)
	}
	var kb, ms int64
	if _, err := fmt.Sscanf(string(out), "VmHWM %d kB %d ms", &kb, &ms); err != nil {
		t.Fatalf("child said %q", out)
	}
	t.Logf("1 GiB copied in %d ms (%.0f MB/s); peak RSS of the copying process %.1f MiB", ms, float64(1<<30)/float64(ms)/1e3, float64(kb)/1024)
	if kb > 64<<10 {
		t.Errorf("peak RSS %d kB is over the 64 MiB target", kb)
	}
}

// rssChild runs one copy for TestCopyPeakRSS and prints its peak RSS.
func rssChild() int {
	log := hclog.New(&hclog.LoggerOptions{Name: "rss", Level: hclog.Warn, Output: os.Stderr})
	ctx := context.Background()
	dial := func(name string) *SSH {
		h, err := DialSSH(ctx, name, SSHConfig{Address: os.Getenv("RSS_ADDR"), User: "root", IdentityFile: os.Getenv("RSS_ID"),
			KnownHosts: os.Getenv("RSS_KH"), WorkDir: os.Getenv("RSS_WORK")}, log)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return h
	}
	src, dst := dial("src"), dial("dst")
	res, err := Copy(ctx, src, os.Getenv("RSS_SRC"), dst, os.Getenv("RSS_DST"), nil)
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
	a := NewLocal("a", Builtin(), hclog.NewNullLogger())
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		if _, err := Copy(context.Background(), a, filepath.Join(dir, "big"), a, filepath.Join(dir, "out"), nil); err != nil {
			b.Fatal(err)
		}
	}
}
