package criu

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestRemoveImages: the images go; the logs, the stats, a symlink (a
// pre-copy round's parent link) and what lies below stay.
func TestRemoveImages(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"pages-1.img", "core-42.img", "dump.log", "stats-dump", "sub/pages-1.img"} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("sub/pages-1.img", filepath.Join(dir, "parent.img")); err != nil {
		t.Fatal(err)
	}
	if err := RemoveImages(dir); err != nil {
		t.Fatal(err)
	}
	var left []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			left = append(left, rel)
		}
		return nil
	})
	slices.Sort(left)
	if want := []string{"dump.log", "parent.img", "stats-dump", "sub/pages-1.img"}; !slices.Equal(left, want) {
		t.Errorf("left %q, want %q", left, want)
	}
	if err := RemoveImages(dir); err != nil {
		t.Errorf("again: %v", err)
	}
}
