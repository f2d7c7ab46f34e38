package host

import (
	"archive/tar"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func TestArchiveRoundTripSSH(t *testing.T) {
	sshd := startSSHD(t)
	h := sshd.host(t, "src")
	dir := t.TempDir()
	makeTree(t, filepath.Join(dir, "tree"))
	ctx := context.Background()
	var res ArchiveResult
	must(t, ActArchive.Call(ctx, h, ArchiveRequest{Source: filepath.Join(dir, "tree"), Destination: filepath.Join(dir, "t.tar.zst")}, &res, CallOpts{}))
	if len(res.Manifest) != 3 || res.Manifest["sub/b.img"].Size != 1 {
		t.Fatalf("manifest %+v", res.Manifest)
	}
	if sum, _ := fileSum(res.Path); sum != res.SHA256 {
		t.Fatalf("archive sha256 %s, result says %s", sum, res.SHA256)
	}
	var ures UnarchiveResult
	must(t, ActUnarchive.Call(ctx, h, ArchiveRequest{Source: res.Path, Destination: filepath.Join(dir, "out")}, &ures, CallOpts{}))
	must(t, os.Chmod(filepath.Join(dir, "out"), 0o711)) // unarchive makes the top directory 0700
	sameTree(t, filepath.Join(dir, "tree"), filepath.Join(dir, "out"))
	noLeftovers(t, dir, "out", "t.tar.zst", "tree")
}

// writeArchive writes a well-formed .tar.zst holding files and a manifest
// that says what the test wants.
func writeArchive(t *testing.T, path string, files map[string]string, m manifest) {
	f, err := os.Create(path)
	must(t, err)
	defer f.Close()
	zw, _ := zstd.NewWriter(f)
	tw := tar.NewWriter(zw)
	add := func(name, body string) {
		must(t, tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: int64(len(body)), Typeflag: tar.TypeReg}))
		tw.Write([]byte(body))
	}
	for name, body := range files {
		add(name, body)
	}
	b, _ := json.Marshal(m)
	add(manifestName, string(b))
	must(t, tw.Close())
	must(t, zw.Close())
}

func TestUnarchiveRefusesBadManifest(t *testing.T) {
	h := NewLocal("dst", Table(Builtin()), testLog(t))
	dir := t.TempDir()
	good := FileSum{Size: 5, SHA256: "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"} // "hello"
	cases := []struct {
		name  string
		files map[string]string
		m     manifest
		want  string
	}{
		{"tampered", map[string]string{"a": "hellO"}, manifest{Files: map[string]FileSum{"a": good}}, "does not match the manifest"},
		{"extra", map[string]string{"a": "hello", "b": "x"}, manifest{Files: map[string]FileSum{"a": good}}, "b is not in the manifest"},
		{"missing", map[string]string{}, manifest{Files: map[string]FileSum{"a": good}}, "a is in the manifest but not in the archive"},
		{"escape", map[string]string{"../evil": "hello"}, manifest{Files: map[string]FileSum{"../evil": good}}, "escapes the destination"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			arch := filepath.Join(dir, c.name+".tar.zst")
			writeArchive(t, arch, c.files, c.m)
			out := filepath.Join(dir, c.name)
			err := ActUnarchive.Call(context.Background(), h, ArchiveRequest{Source: arch, Destination: out}, nil, CallOpts{})
			if err == nil || !strings.Contains(err.Error(), `host "dst": fs.unarchive: refusing to extract`) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want %q", err, c.want)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Fatal("a refused archive left its destination")
			}
		})
	}
	noLeftovers(t, dir, "escape.tar.zst", "extra.tar.zst", "missing.tar.zst", "tampered.tar.zst")
}

// TestUnarchiveNoRoom: an extraction that would not fit is refused before
// it starts, and leaves nothing.
func TestUnarchiveNoRoom(t *testing.T) {
	h := NewLocal("dst", Table(Builtin()), testLog(t))
	dir := t.TempDir()
	src := filepath.Join(dir, "images")
	must(t, os.Mkdir(src, 0o700))
	makeFile(t, filepath.Join(src, "pages-1.img"), 8<<20, 3)
	arch := filepath.Join(dir, "images.tar.zst")
	must(t, ActArchive.Call(context.Background(), h, ArchiveRequest{Source: src, Destination: arch}, nil, CallOpts{}))
	small := filepath.Join(dir, "small")
	must(t, os.Mkdir(small, 0o700))
	must(t, syscall.Mount("tmpfs", small, "tmpfs", 0, "size=2m"))
	t.Cleanup(func() { syscall.Unmount(small, syscall.MNT_DETACH) })

	err := ActUnarchive.Call(context.Background(), h, ArchiveRequest{Source: arch, Destination: filepath.Join(small, "images")}, nil, CallOpts{})
	if err == nil || !strings.Contains(err.Error(), "no room for the extracted files: it needs 8.0 MiB, and the file system of "+small+" has 2.0 MiB free") {
		t.Fatalf("unarchive of 8 MiB into 2 MiB: %v", err)
	}
	noLeftovers(t, small)
}
