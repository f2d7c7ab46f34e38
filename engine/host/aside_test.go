package host

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"
)

// files returns the regular files under dir with their contents.
func files(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, _ := os.ReadFile(p)
			rel, _ := filepath.Rel(dir, p)
			out[rel] = string(b)
		}
		return nil
	})
	return out
}

func writeFiles(t *testing.T, dir string, fs map[string]string) {
	t.Helper()
	for name, body := range fs {
		p := filepath.Join(dir, name)
		must(t, os.MkdirAll(filepath.Dir(p), 0o700))
		must(t, os.WriteFile(p, []byte(body), 0o600))
	}
}

func sameFiles(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %v, want %v", what, got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("%s: %v, want %v", what, got, want)
		}
	}
}

// besideDest lists the names mig put beside dest.
func besideDest(t *testing.T, dest string) []string {
	t.Helper()
	ents, _ := os.ReadDir(filepath.Dir(dest))
	var out []string
	for _, e := range ents {
		if e.Name() != filepath.Base(dest) {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
}

// A copy into an existing directory keeps the old content aside; the undo
// (fs.put-back) puts it back, twice without harm; a commit deletes it.
func TestCopyKeepsAsideAndPutsBack(t *testing.T) {
	ctx := context.Background()
	a, b := NewLocal("a", Table(Builtin()), testLog(t)), NewLocal("b", Table(Builtin()), testLog(t))
	root := t.TempDir()
	src, dest := filepath.Join(root, "src"), filepath.Join(root, "out", "dest")
	writeFiles(t, src, map[string]string{"new.txt": "new", "same.txt": "new same", "sub/deep.txt": "deep"})
	before := map[string]string{"keep.txt": "keep", "same.txt": "old same", "sub/old.txt": "old"}

	for _, merge := range []bool{false, true} {
		must(t, os.RemoveAll(filepath.Join(root, "out")))
		writeFiles(t, dest, before)
		res, err := CopyWith(ctx, a, src, b, dest, CopyOptions{Merge: merge, KeepAside: true})
		must(t, err)
		if res.Placed.Aside == "" || res.Placed.Merged != merge {
			t.Fatalf("merge %v: placed %+v", merge, res.Placed)
		}
		if merge {
			sameFiles(t, "merged", files(t, dest), map[string]string{"keep.txt": "keep", "same.txt": "new same", "new.txt": "new", "sub/old.txt": "old", "sub/deep.txt": "deep"})
			if want := []string{"new.txt", "sub/deep.txt"}; !slices.Equal(res.Placed.Added, want) {
				t.Fatalf("added %q, want %q", res.Placed.Added, want)
			}
		} else {
			sameFiles(t, "replaced", files(t, dest), files(t, src))
		}
		for range 2 {
			must(t, ActPutBack.Call(ctx, b, res.Placed, nil, CallOpts{}))
			sameFiles(t, "put back", files(t, dest), before)
		}
		if l := besideDest(t, dest); len(l) != 0 {
			t.Fatalf("left beside the destination: %q", l)
		}
		// Commit instead: the aside copy goes.
		res, err = CopyWith(ctx, a, src, b, dest, CopyOptions{Merge: merge, KeepAside: true})
		must(t, err)
		must(t, ActRemove.Call(ctx, b, RemoveRequest{Path: res.Placed.Aside, Recursive: true}, nil, CallOpts{}))
		if l := besideDest(t, dest); len(l) != 0 {
			t.Fatalf("left beside the destination after commit: %q", l)
		}
	}
	// Into nothing: the undo removes what the copy made.
	fresh := filepath.Join(root, "fresh")
	res, err := CopyWith(ctx, a, src, b, fresh, CopyOptions{Merge: true, KeepAside: true})
	must(t, err)
	must(t, ActPutBack.Call(ctx, b, res.Placed, nil, CallOpts{}))
	if _, err := os.Lstat(fresh); !os.IsNotExist(err) {
		t.Fatalf("undo of a copy into nothing left %s: %v", fresh, err)
	}
}

// An unarchive over an existing directory keeps it aside until put back.
func TestUnarchiveKeepsAside(t *testing.T) {
	ctx := context.Background()
	h := NewLocal("h", Table(Builtin()), testLog(t))
	root := t.TempDir()
	src, arc, dest := filepath.Join(root, "src"), filepath.Join(root, "a.tar.zst"), filepath.Join(root, "dest")
	writeFiles(t, src, map[string]string{"img": "image"})
	writeFiles(t, dest, map[string]string{"keep.txt": "keep"})
	must(t, ActArchive.Call(ctx, h, ArchiveRequest{Source: src, Destination: arc}, nil, CallOpts{}))
	var res UnarchiveResult
	must(t, ActUnarchive.Call(ctx, h, ArchiveRequest{Source: arc, Destination: dest, KeepAside: true}, &res, CallOpts{}))
	sameFiles(t, "extracted", files(t, dest), map[string]string{"img": "image"})
	must(t, ActPutBack.Call(ctx, h, *res.Placed, nil, CallOpts{}))
	sameFiles(t, "put back", files(t, dest), map[string]string{"keep.txt": "keep"})
}

// A partial file that a live action is writing survives another run's
// clean-up of leftovers; one whose writer is gone does not.
func TestRemoveStaleSparesLivePartials(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "dest")
	c := &Call{Log: testLog(t)}
	live, err := newPartial(dest, c)
	must(t, err)
	must(t, os.WriteFile(live.path, []byte("being written"), 0o600))
	dead, err := newPartial(dest, c)
	must(t, err)
	must(t, os.WriteFile(dead.path, []byte("left by a dead run"), 0o600))
	dead.lock.Close() // its process died: the flock is gone, the files stay
	legacy := filepath.Join(filepath.Dir(dest), ".dest.mig-partial-0123456789ab")
	must(t, os.WriteFile(legacy, nil, 0o600))

	third, err := newPartial(dest, c)
	must(t, err)
	defer third.release()
	if _, err := os.Stat(live.path); err != nil {
		t.Fatalf("a live partial was removed: %v", err)
	}
	for _, p := range []string{dead.path, dead.lockPath, legacy} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("stale %s was kept: %v", p, err)
		}
	}
	live.release()
	if _, err := os.Stat(live.lockPath); !os.IsNotExist(err) {
		t.Fatalf("release left the lock: %v", err)
	}
}
