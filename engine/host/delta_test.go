package host

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// TestCopyDelta: a delta copy makes the destination what the source is,
// sending only the blocks that differ, whether files grew, shrank, changed
// in places, are new, or went away.
func TestCopyDelta(t *testing.T) {
	a := NewLocal("a", Table(Builtin()), testLog(t))
	b := NewLocal("b", Table(Builtin()), testLog(t))
	for _, direct := range []string{"", "127.0.0.1"} {
		t.Run("direct="+direct, func(t *testing.T) {
			dir := t.TempDir()
			src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
			must(t, os.MkdirAll(filepath.Join(src, "sub"), 0o750))
			must(t, os.MkdirAll(filepath.Join(dst, "sub"), 0o700))
			const mib = 1 << 20
			makeFile(t, filepath.Join(src, "db"), 5*mib+4000, 1)
			makeFile(t, filepath.Join(src, "grown"), 3*mib+10, 2)
			makeFile(t, filepath.Join(src, "shrunk"), mib+7, 3)
			makeFile(t, filepath.Join(src, "sub", "new"), 2*mib, 4)
			must(t, os.WriteFile(filepath.Join(src, "same"), []byte("unchanged"), 0o640))
			// The destination holds an older copy: db with two blocks
			// written since, grown shorter, shrunk longer, a stale file.
			copyFile := func(from, to string) {
				data, err := os.ReadFile(from)
				must(t, err)
				must(t, os.WriteFile(to, data, 0o600))
			}
			copyFile(filepath.Join(src, "db"), filepath.Join(dst, "db"))
			f, err := os.OpenFile(filepath.Join(dst, "db"), os.O_WRONLY, 0)
			must(t, err)
			f.WriteAt([]byte("older"), mib+17)
			f.WriteAt([]byte("older"), 5*mib+100)
			f.Close()
			data, err := os.ReadFile(filepath.Join(src, "grown"))
			must(t, err)
			must(t, os.WriteFile(filepath.Join(dst, "grown"), data[:2*mib+5], 0o600))
			data, err = os.ReadFile(filepath.Join(src, "shrunk"))
			must(t, err)
			must(t, os.WriteFile(filepath.Join(dst, "shrunk"), append(data, make([]byte, 3*mib)...), 0o600))
			copyFile(filepath.Join(src, "same"), filepath.Join(dst, "same"))
			must(t, os.WriteFile(filepath.Join(dst, "sub", "stale"), []byte("gone"), 0o600))

			res, err := CopyWith(context.Background(), a, src, b, dst, CopyOptions{Delta: true, Direct: direct, KeepAside: true})
			must(t, err)
			sameTree(t, src, dst)
			// db: block 1 and the last 4000 bytes; grown: blocks 2 and 3;
			// shrunk: its last 7 bytes; sub/new: whole. And tar headers.
			if res.Bytes > 4*mib+64<<10 {
				t.Errorf("the delta stream took %d bytes", res.Bytes)
			}
			if res.Placed.Aside == "" {
				t.Errorf("nothing kept aside: %+v", res.Placed)
			}
		})
	}
}

func TestRanges(t *testing.T) {
	for _, blocks := range [][]int{nil, {0}, {0, 1, 2, 3, 7}, {2, 4, 5, 9, 10, 11}} {
		s := formatRanges(blocks)
		got, err := parseRanges(s, 12)
		if err != nil || len(got) != len(blocks) || (len(blocks) > 0 && !reflect.DeepEqual(got, blocks)) {
			t.Errorf("%v -> %q -> %v %v", blocks, s, got, err)
		}
	}
	for _, bad := range []string{"x", "3-1", "0,0", "5,2", "11-12", "-1"} {
		if _, err := parseRanges(bad, 12); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// TestCopyTorn: a seed copies files that change under it, growing and
// shrinking, where a plain copy would fail; a delta copy, once they stop,
// makes the destination whole.
func TestCopyTorn(t *testing.T) {
	a := NewLocal("a", Table(Builtin()), testLog(t))
	b := NewLocal("b", Table(Builtin()), testLog(t))
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	must(t, os.MkdirAll(src, 0o700))
	makeFile(t, filepath.Join(src, "log"), 3<<20, 5)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		f, err := os.OpenFile(filepath.Join(src, "log"), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return
		}
		defer f.Close()
		chunk := make([]byte, 64<<10)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			chunk[0] = byte(i)
			f.Write(chunk)
			if i%10 == 9 {
				f.Truncate(1 << 20)
			}
			os.WriteFile(filepath.Join(src, "tmp"), chunk, 0o600)
			os.Remove(filepath.Join(src, "tmp"))
		}
	}()
	for i := range 20 {
		if _, err := CopyWith(context.Background(), a, src, b, dst, CopyOptions{Torn: true}); err != nil {
			close(stop)
			<-done
			t.Fatalf("seed %d: %v", i, err)
		}
	}
	close(stop)
	<-done
	_, err := CopyWith(context.Background(), a, src, b, dst, CopyOptions{Delta: true})
	must(t, err)
	sameTree(t, src, dst)
}
