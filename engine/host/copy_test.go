package host

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// makeFile writes size pseudo-random bytes to path and returns their sha256.
func makeFile(t testing.TB, path string, size int64, seed uint64) string {
	t.Helper()
	f, err := os.Create(path)
	must(t, err)
	defer f.Close()
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	buf := make([]byte, 1<<20)
	for left := size; left > 0; {
		n := min(left, int64(len(buf)))
		r.Read(buf[:n])
		_, err := f.Write(buf[:n])
		must(t, err)
		left -= n
	}
	must(t, f.Close())
	sum, err := fileSum(path)
	must(t, err)
	return sum
}

// makeTree builds a small directory with subdirectories, modes and a symlink.
func makeTree(t testing.TB, dir string) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Join(dir, "sub", "deep"), 0o750))
	must(t, os.WriteFile(filepath.Join(dir, "a.img"), bytes.Repeat([]byte("a"), 3000), 0o600))
	must(t, os.WriteFile(filepath.Join(dir, "sub", "b.img"), []byte("b"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "sub", "deep", "empty"), nil, 0o400))
	must(t, os.Symlink("../a.img", filepath.Join(dir, "sub", "link")))
	must(t, os.Chmod(dir, 0o711))
}

func TestCopySkipsSockets(t *testing.T) {
	dir := t.TempDir()
	must(t, os.Mkdir(filepath.Join(dir, "src"), 0o700))
	l, err := net.Listen("unix", filepath.Join(dir, "src", "sock"))
	must(t, err)
	defer l.Close()
	must(t, os.WriteFile(filepath.Join(dir, "src", "f"), []byte("x"), 0o600))
	a := NewLocal("a", Table(Builtin()), testLog(t))
	_, err = Copy(context.Background(), a, filepath.Join(dir, "src"), a, filepath.Join(dir, "dst"), nil)
	must(t, err)
	noLeftovers(t, filepath.Join(dir, "dst"), "f")
}

// sameTree fails unless two trees hold the same names, modes, contents and links.
func sameTree(t testing.TB, a, b string) {
	t.Helper()
	list := func(root string) map[string]string {
		m := map[string]string{}
		filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
			must(t, err)
			rel, _ := filepath.Rel(root, p)
			desc := fi.Mode().String()
			switch {
			case fi.Mode().IsRegular():
				b, _ := os.ReadFile(p)
				desc += " " + string(b)
			case fi.Mode()&os.ModeSymlink != 0:
				l, _ := os.Readlink(p)
				desc += " -> " + l
			}
			m[rel] = desc
			return nil
		})
		return m
	}
	ma, mb := list(a), list(b)
	if len(ma) != len(mb) {
		t.Fatalf("trees differ: %v vs %v", ma, mb)
	}
	for k, v := range ma {
		if mb[k] != v {
			t.Fatalf("%s: %q vs %q", k, v, mb[k])
		}
	}
}

// noLeftovers fails if anything but want sits in dir.
func noLeftovers(t testing.TB, dir string, want ...string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Join(names, ",") != strings.Join(want, ",") {
		t.Fatalf("%s holds %v, want %v", dir, names, want)
	}
}

func TestCopyLocal(t *testing.T) {
	ctx := context.Background()
	a := NewLocal("a", Table(Builtin()), testLog(t))
	b := NewLocal("b", Table(Builtin()), testLog(t))
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	makeTree(t, src)
	out := filepath.Join(dir, "out")

	res, err := Copy(ctx, a, src, b, filepath.Join(out, "images"), nil)
	must(t, err)
	sameTree(t, src, filepath.Join(out, "images"))
	if res.Bytes == 0 || len(res.SHA256) != 64 {
		t.Fatalf("result %+v", res)
	}
	// Copying again replaces the directory, leaving nothing else behind.
	must(t, os.WriteFile(filepath.Join(out, "images", "stale"), nil, 0o600))
	_, err = Copy(ctx, a, src, b, filepath.Join(out, "images"), nil)
	must(t, err)
	sameTree(t, src, filepath.Join(out, "images"))
	noLeftovers(t, out, "images")

	// So does a copy without fsyncs, as of checkpoint images.
	_, err = CopyWith(ctx, a, src, b, filepath.Join(out, "images"), CopyOptions{NoSync: true})
	must(t, err)
	sameTree(t, src, filepath.Join(out, "images"))
	noLeftovers(t, out, "images")

	// A single file keeps its mode.
	var reports []Progress
	_, err = Copy(ctx, a, filepath.Join(src, "a.img"), b, filepath.Join(out, "a.img"), func(p Progress) { reports = append(reports, p) })
	must(t, err)
	fi, err := os.Stat(filepath.Join(out, "a.img"))
	must(t, err)
	if fi.Mode().Perm() != 0o600 || fi.Size() != 3000 {
		t.Fatalf("copied file %v %d", fi.Mode(), fi.Size())
	}
	if len(reports) == 0 || reports[len(reports)-1].Done != 3000 {
		t.Fatalf("progress %+v", reports)
	}

	// A missing source fails, naming the source host.
	_, err = Copy(ctx, a, filepath.Join(dir, "missing"), b, filepath.Join(out, "x"), nil)
	if err == nil || !strings.Contains(err.Error(), `host "a": fs.send`) {
		t.Fatalf("missing source: %v", err)
	}
	noLeftovers(t, out, "a.img", "images")
}

func TestCopySmallFilesSSH(t *testing.T) {
	sshd := startSSHD(t)
	src, dst := sshd.host(t, "src"), sshd.host(t, "dst")
	dir := t.TempDir()
	makeTree(t, filepath.Join(dir, "tree"))
	_, err := Copy(context.Background(), src, filepath.Join(dir, "tree"), dst, filepath.Join(dir, "copy", "tree"), nil)
	must(t, err)
	sameTree(t, filepath.Join(dir, "tree"), filepath.Join(dir, "copy", "tree"))
}

func TestCorruptStreamDetected(t *testing.T) {
	sshd := startSSHD(t)
	src, dst := sshd.host(t, "src"), sshd.host(t, "dst")
	dir := t.TempDir()
	makeFile(t, filepath.Join(dir, "f"), 4<<20, 1)
	out := filepath.Join(dir, "out")
	must(t, os.Mkdir(out, 0o700))

	// Relay fs.send to fs.recv by hand, flipping one byte on the way.
	pr, pw, _ := os.Pipe()
	go func() {
		w := &flipWriter{w: pw, at: 1 << 20}
		ActSend.Call(context.Background(), src, SendRequest{Path: filepath.Join(dir, "f")}, nil, CallOpts{Out: w})
		pw.Close()
	}()
	err := ActRecv.Call(context.Background(), dst, RecvRequest{Path: filepath.Join(out, "f")}, nil, CallOpts{In: pr})
	pr.Close()
	if err == nil || !strings.Contains(err.Error(), `host "dst": fs.recv`) || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Fatalf("corrupt stream: %v", err)
	}
	noLeftovers(t, out)
}

// flipWriter flips one byte of what passes through, at offset at.
type flipWriter struct {
	w  *os.File
	n  int64
	at int64
}

func (f *flipWriter) Write(p []byte) (int, error) {
	if f.n <= f.at && f.at < f.n+int64(len(p)) {
		q := append([]byte(nil), p...)
		q[f.at-f.n] ^= 0xff
		p = q
	}
	f.n += int64(len(p))
	return f.w.Write(p)
}

func TestCopyFullDisk(t *testing.T) {
	sshd := startSSHD(t)
	src, dst := sshd.host(t, "src"), sshd.host(t, "dst")
	dir := t.TempDir()
	makeFile(t, filepath.Join(dir, "f"), 8<<20, 2)
	small := filepath.Join(dir, "small")
	must(t, os.Mkdir(small, 0o700))
	must(t, syscall.Mount("tmpfs", small, "tmpfs", 0, "size=2m"))
	t.Cleanup(func() { syscall.Unmount(small, syscall.MNT_DETACH) })

	// Refused before a byte is written: the stream says its size.
	_, err := Copy(context.Background(), src, filepath.Join(dir, "f"), dst, filepath.Join(small, "f"), nil)
	if err == nil || !strings.Contains(err.Error(), `host "dst": fs.recv`) || !strings.Contains(err.Error(), "no room for the copy: it needs 8.0 MiB") {
		t.Fatalf("copy of 8 MiB into 2 MiB: %v", err)
	}
	noLeftovers(t, small)
	// The same over a direct connection: the receiver's refusal is the
	// error, not the sender's broken connection.
	_, err = CopyWith(context.Background(), src, filepath.Join(dir, "f"), dst, filepath.Join(small, "f"), CopyOptions{Direct: "127.0.0.1"})
	if err == nil || !strings.Contains(err.Error(), "no room for the copy: it needs 8.0 MiB") {
		t.Fatalf("direct copy of 8 MiB into 2 MiB: %v", err)
	}
	noLeftovers(t, small)

	// A directory's size is an estimate: 700 one-byte files fit it, but
	// each takes a page of tmpfs, and the disk fills during the copy.
	many := filepath.Join(dir, "many")
	must(t, os.Mkdir(many, 0o700))
	for i := range 700 {
		must(t, os.WriteFile(filepath.Join(many, strconv.Itoa(i)), []byte("x"), 0o600))
	}
	_, err = Copy(context.Background(), src, many, dst, filepath.Join(small, "many"), nil)
	if err == nil || !strings.Contains(err.Error(), `host "dst": fs.recv`) || !strings.Contains(err.Error(), "no space left on device") {
		t.Fatalf("full disk: %v", err)
	}
	noLeftovers(t, small)
}

func TestProtocolInProcess(t *testing.T) {
	// Serve and callAgent over plain pipes: logs, progress and results.
	actions := Actions{
		"hello": func(ctx context.Context, c *Call) (any, error) {
			c.Log.Info("greeting", "who", "test")
			c.Progress(Progress{Done: 1, Total: 2})
			return map[string]string{"hi": "there"}, nil
		},
	}
	cr, aw, _ := os.Pipe()
	ar, cw, _ := os.Pipe()
	go func() {
		Serve(context.Background(), actions, ar, aw, testLog(t))
		aw.Close()
	}()
	var got map[string]string
	var prog []Progress
	var logs strings.Builder
	log := hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info})
	_, err := callAgent(context.Background(), cw, cr, "hello", nil, &got, CallOpts{Progress: func(p Progress) { prog = append(prog, p) }}, log, func() { cw.Close() })
	cw.Close()
	must(t, err)
	if got["hi"] != "there" || len(prog) != 1 || prog[0].Done != 1 {
		t.Fatalf("got %v, progress %v", got, prog)
	}
	if !strings.Contains(logs.String(), "[INFO]  greeting: who=test") {
		t.Fatalf("agent log not forwarded: %q", logs.String())
	}
}

// The agent's own binary is what cmd/mig runs; keep the test binary honest.
func TestTestBinaryIsAgent(t *testing.T) {
	exe, _ := os.Executable()
	cmd := exec.Command(exe, "agent")
	cmd.Stdin = strings.NewReader("")
	if err := cmd.Run(); err == nil {
		t.Fatal("agent accepted an empty request")
	}
}

// TestCopyMerge: with Merge, a directory's files join an existing
// directory (as the small images join the pages a page server wrote).
func TestCopyMerge(t *testing.T) {
	a := NewLocal("a", Table(Builtin()), testLog(t))
	b := NewLocal("b", Table(Builtin()), testLog(t))
	src, dst := t.TempDir(), t.TempDir()
	write := func(p, s string) {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(src, "core.img"), "core")
	write(filepath.Join(src, "pagemap.img"), "new pagemap")
	write(filepath.Join(src, "sub", "x"), "x")
	write(filepath.Join(dst, "pages-1.img"), "pages")
	write(filepath.Join(dst, "pagemap.img"), "old pagemap")
	write(filepath.Join(dst, "sub", "y"), "y")
	if _, err := CopyWith(context.Background(), a, src, b, dst, CopyOptions{Merge: true}); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"core.img": "core", "pagemap.img": "new pagemap", "pages-1.img": "pages", "sub/x": "x", "sub/y": "y"} {
		got, err := os.ReadFile(filepath.Join(dst, name))
		if err != nil || string(got) != want {
			t.Errorf("%s: %q %v, want %q", name, got, err, want)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(dst), ".*mig-partial*")); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
}

// A cancelled call returns even when its agent never answers nor ends
// (an action stuck where it ignores the cancel keeps the session open).
func TestCallAgentAbortStuck(t *testing.T) {
	grace := abortGrace
	abortGrace = 500 * time.Millisecond
	defer func() { abortGrace = grace }()
	block := make(chan struct{})
	defer close(block)
	actions := Actions{
		"stuck": func(ctx context.Context, c *Call) (any, error) {
			<-block
			return nil, nil
		},
	}
	cr, aw, _ := os.Pipe()
	ar, cw, _ := os.Pipe()
	defer cr.Close()
	defer cw.Close()
	go func() {
		Serve(context.Background(), actions, ar, aw, testLog(t))
		aw.Close()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := callAgent(ctx, cw, cr, "stuck", nil, nil, CallOpts{}, testLog(t), func() {})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v, want deadline exceeded", err)
	}
	if took := time.Since(start); took > abortGrace+2*time.Second {
		t.Fatalf("the call returned after %s", took)
	}
}
