package criu

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mig-project/mig/engine/host"
)

func TestExplain(t *testing.T) {
	log := `(00.000000) CRIU run id = 1234
(00.010000) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted
(00.020000) Warn  (criu/kerndat.c:1290): Can't keep kdat cache on non-tempfs
(00.030000) Dumping task 42
(00.040000) No inventory.img image
(00.050000) Error (criu/protobuf.c:72): Unexpected EOF on (empty-image)
`
	path := filepath.Join(t.TempDir(), "restore.log")
	if err := os.WriteFile(path, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	got := Explain(path, 8)
	want := []string{"(00.040000) No inventory.img image", "(00.050000) Error (criu/protobuf.c:72): Unexpected EOF on (empty-image)"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("Explain:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	msg := failed("restore", os.ErrInvalid, path).Error()
	if !strings.Contains(msg, "No inventory.img image") || strings.Contains(msg, "RLIMIT") || !strings.Contains(msg, path) {
		t.Errorf("error message:\n%s", msg)
	}
}

// TestStalled: a restore that hung (the step's timeout) is explained by
// where its log ends; a lock wait gets its meaning.
func TestStalled(t *testing.T) {
	log := `(00.001206) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted
(00.005128) 100444: epoll: Restore eventpoll-tfd: id 0x000008 tfd       17 events 0x8000201d data 0x007fc70fe8a348
(00.005145) 100444: epoll: Restore eventpoll-tfd: id 0x000008 tfd        5 events 0x000019 data 0x000000018c1a60
(00.005208) 100444: (flock)flag: 2, type: 1, cmd: 2, pid: 100444, fd: 9
`
	path := filepath.Join(t.TempDir(), "restore.log")
	os.WriteFile(path, []byte(log), 0o600)
	got := Stalled(path, 2)
	if len(got) != 3 || !strings.Contains(got[0], "tfd        5") || !strings.Contains(got[1], "(flock)flag: 2") ||
		!strings.Contains(got[2], "file locks again") {
		t.Errorf("Stalled: %q", got)
	}
	os.WriteFile(path, []byte("(00.000001) a\n(00.000002) b\n"), 0o600)
	if got := Stalled(path, 3); len(got) != 2 || got[1] != "(00.000002) b" {
		t.Errorf("Stalled without a lock: %q", got)
	}
}

func TestExplainWarningsOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.log")
	os.WriteFile(path, []byte("(0) a\n(1) Warn  (x.c:1): something odd\n(2) b\n"), 0o600)
	if got := Explain(path, 8); len(got) != 1 || !strings.Contains(got[0], "something odd") {
		t.Errorf("Explain: %q", got)
	}
}

func TestDoctorAction(t *testing.T) {
	needCRIU(t)
	var r Report
	if err := ActDoctor.Call(context.Background(), testHost(t), DoctorRequest{}, &r, host.CallOpts{}); err != nil {
		t.Fatal(err)
	}
	if r.CRIU.Path == "" || r.CRIU.Rule == "" || !r.CheckOK || r.Kernel == "" || r.Cgroup == "" || len(r.Limits) != 2 {
		t.Errorf("report: %+v", r)
	}
	for _, f := range []string{FeatureDirtyTrack, FeatureUffd, FeatureNftLock} {
		if _, ok := r.Features[f]; !ok {
			t.Errorf("feature %s not reported", f)
		}
	}
}

func TestFindOrder(t *testing.T) {
	needCRIU(t)
	ctx := context.Background()
	b, err := Find(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("MIG_CRIU", b.Path)
	if got, err := Find(ctx, ""); err != nil || got.Rule != "MIG_CRIU" {
		t.Errorf("with MIG_CRIU: %+v %v", got, err)
	}
	if got, err := Find(ctx, b.Path); err != nil || got.Rule != "host setting" {
		t.Errorf("with a host setting: %+v %v", got, err)
	}
	t.Setenv("MIG_CRIU", "/nonexistent/criu")
	if _, err := Find(ctx, ""); err == nil || !strings.Contains(err.Error(), "MIG_CRIU") {
		t.Errorf("a broken MIG_CRIU must be an error, got %v", err)
	}
}

// A line longer than any buffer (a path, a dump of data) is cut, and the
// errors after it still explain the failure.
func TestExplainLongLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.log")
	long := "(0) " + strings.Repeat("x", 2<<20) + "\n"
	os.WriteFile(path, []byte(long+"(1) Restoring\n(2) Error (criu/files.c:1): cannot open /data/db\n"), 0o600)
	got := Explain(path, 8)
	if len(got) != 2 || !strings.Contains(got[1], "/data/db") {
		t.Fatalf("explained %d lines, want the error after the long line: %.200q", len(got), got)
	}
}
