package steps

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestArchiveUnarchive(t *testing.T) {
	a, b, vars := twoHosts()
	dir := t.TempDir()
	src := filepath.Join(dir, "images")
	os.MkdirAll(filepath.Join(src, "sub"), 0o700)
	os.WriteFile(filepath.Join(src, "core-1.img"), []byte(strings.Repeat("core", 5000)), 0o600)
	os.WriteFile(filepath.Join(src, "sub", "x"), []byte("x"), 0o644)
	archive := filepath.Join(dir, "images.tar.zst")
	env := testEnv(t, a, b)

	cfg := decode(t, Archive{}, `
host        = host.a
source      = "`+src+`"
destination = "`+archive+`"
`, vars)
	res, err := Archive{}.Apply(context.Background(), cfg, env)
	if err != nil {
		t.Fatal(err)
	}
	m := res.Outputs.GetAttr("manifest").AsValueMap()
	if len(m) != 2 || len(m["core-1.img"].AsString()) != 64 {
		t.Fatalf("manifest %#v", m)
	}
	if fi, err := os.Stat(archive); err != nil || res.Metrics["bytes"] != float64(fi.Size()) {
		t.Fatalf("archive %v, metrics %v", err, res.Metrics)
	}

	out := filepath.Join(dir, "restored")
	ucfg := decode(t, Unarchive{}, `
host        = host.b
source      = "`+archive+`"
destination = "`+out+`"
`, vars)
	ures, err := Unarchive{}.Apply(context.Background(), ucfg, env)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(filepath.Join(out, "core-1.img"))
	if string(got) != strings.Repeat("core", 5000) || ures.Metrics["files"] != 2 {
		t.Fatalf("restored %d bytes, metrics %v", len(got), ures.Metrics)
	}
	if _, err := os.Stat(filepath.Join(out, ".mig-manifest.json")); err == nil {
		t.Fatal("the manifest was extracted")
	}

	// A corrupted archive is refused and nothing is extracted.
	data, _ := os.ReadFile(archive)
	data[len(data)/2] ^= 0x55
	os.WriteFile(archive, data, 0o600)
	bad := filepath.Join(dir, "bad")
	bcfg := decode(t, Unarchive{}, `
host        = host.b
source      = "`+archive+`"
destination = "`+bad+`"
`, vars)
	_, err = Unarchive{}.Apply(context.Background(), bcfg, env)
	if err == nil || !strings.Contains(err.Error(), `host "b": fs.unarchive: refusing to extract`) {
		t.Fatalf("corrupted archive: %v", err)
	}
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Fatalf("a refused archive left %s", bad)
	}

	if err := res.Undo(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(archive); !os.IsNotExist(err) {
		t.Fatal("undo kept the archive")
	}
}
