package host

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// FileSum is a regular file's size and sha256 in a manifest.
type FileSum struct {
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// tarSize is the size of the tar stream writeTar makes of dir, for
// progress reports. Long names (PAX headers) make the real stream larger.
// With torn, entries that go meanwhile are left out.
func tarSize(dir string, torn bool) (int64, error) {
	n := int64(1024)
	gone := func(err error) bool { return torn && errors.Is(err, fs.ErrNotExist) }
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if gone(err) {
			return nil
		}
		if err != nil {
			return err
		}
		n += 512
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if gone(err) {
				return nil
			}
			if err != nil {
				return err
			}
			n += (fi.Size() + 511) &^ 511
		}
		return nil
	})
	return n, err
}

// tarOptions are writeTar's optional parts.
type tarOptions struct {
	// sums, when not nil, gets each regular file's size and sha256.
	sums map[string]FileSum
	// basis lists the regular files that go as delta entries (delta.go),
	// compared by their blocks in mine where listed.
	basis, mine BlockSums
	// torn copies files that change while being read (a seed, which a
	// delta copy makes whole later): each as far as it goes, padded with
	// zeros to the size it had when opened, and one that went is left out.
	torn bool
}

// writeTar writes dir to tw: the top directory as "./", then its entries in
// lexical order, with names relative to dir. The caller closes tw.
func writeTar(ctx context.Context, tw *tar.Writer, dir string, o tarOptions) error {
	sums, basis, mine := o.sums, o.basis, o.mine
	buf := make([]byte, chunkSize)
	gone := func(err error) bool { return o.torn && errors.Is(err, fs.ErrNotExist) }
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if gone(err) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		fi, err := d.Info()
		if gone(err) {
			return nil
		}
		if err != nil {
			return err
		}
		if fi.Mode()&fs.ModeSocket != 0 {
			return nil // a socket cannot be copied; whoever listens on it recreates it
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		hdr.Name = rel
		if fi.IsDir() {
			hdr.Name += "/"
		}
		hdr.AccessTime, hdr.ChangeTime = hdr.ModTime, hdr.ModTime
		hdr.Format = tar.FormatPAX
		if o.torn && fi.Mode().IsRegular() {
			return writeTorn(tw, hdr, p, buf)
		}
		theirs, delta := basis[rel]
		if !delta || !fi.Mode().IsRegular() {
			if err := tw.WriteHeader(hdr); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		if delta {
			header := func(size int64, pax map[string]string) error {
				hdr.Size, hdr.PAXRecords = size, pax
				return tw.WriteHeader(hdr)
			}
			if err := writeDelta(tw, f, fi.Size(), mine[rel], theirs, header, buf); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			return nil
		}
		dst := io.Writer(tw)
		h := sha256.New()
		if sums != nil {
			dst = io.MultiWriter(tw, h)
		}
		n, err := io.CopyBuffer(dst, onlyReader{f}, buf)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		if n != fi.Size() {
			return fmt.Errorf("%s changed size while being read", p)
		}
		if sums != nil {
			sums[rel] = FileSum{Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Flush()
}

// writeTorn writes the regular file at p under hdr, as writeTar's torn
// option says.
func writeTorn(tw *tar.Writer, hdr *tar.Header, p string, buf []byte) error {
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	hdr.Size = fi.Size()
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	n, err := io.CopyBuffer(tw, io.LimitReader(onlyReader{f}, hdr.Size), buf)
	if err == nil {
		_, err = io.CopyBuffer(tw, io.LimitReader(zeros{}, hdr.Size-n), buf)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return nil
}

// closeFile gives a file written from a tar entry the entry's mode, syncs
// it if asked, and closes it; err is the writing's outcome.
func closeFile(f *os.File, hdr *tar.Header, sync bool, err error) error {
	if err == nil {
		err = f.Chmod(hdr.FileInfo().Mode().Perm())
	}
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// tarEntry is a tar header with its name checked to stay inside the tree.
type tarEntry struct {
	hdr  *tar.Header
	name string // cleaned, relative, "." for the top directory
}

func nextEntry(tr *tar.Reader) (tarEntry, error) {
	hdr, err := tr.Next()
	if err != nil {
		return tarEntry{}, err
	}
	name := path.Clean(strings.TrimPrefix(hdr.Name, "./"))
	if name == "" || path.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
		return tarEntry{}, fmt.Errorf("tar entry %q escapes the destination", hdr.Name)
	}
	return tarEntry{hdr: hdr, name: name}, nil
}

// readTar extracts a tar stream into dir, which exists and is empty. All
// writes go through an os.Root, so entries and symlinks cannot reach
// outside dir. When want is not nil, every regular file's sha256 must match
// it, and want must list exactly the files in the stream; the entry named
// skip is ignored. A delta entry's file is built from its namesake in basis.
func readTar(r io.Reader, dir string, log hclog.Logger, want map[string]FileSum, skip string, sync bool, basis *os.Root) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	tr := tar.NewReader(r)
	asRoot := os.Geteuid() == 0
	buf := make([]byte, chunkSize)
	type dirMode struct {
		name string
		hdr  *tar.Header
	}
	var dirs []dirMode
	seen := 0
	for {
		e, err := nextEntry(tr)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		hdr, name := e.hdr, e.name
		if name == skip {
			continue
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if name != "." {
				if err := root.Mkdir(name, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
					return err
				}
			}
			dirs = append(dirs, dirMode{name, hdr})
			continue
		case tar.TypeReg:
			if _, ok := hdr.PAXRecords[paxDeltaSize]; ok {
				if want != nil {
					return fmt.Errorf("%s: a delta entry in an archive", name)
				}
				f, err := readDelta(tr, root, basis, name, hdr.PAXRecords, hdr.Size, buf)
				if err != nil {
					return err
				}
				if err := closeFile(f, hdr, sync, nil); err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
				break
			}
			f, err := root.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
			if err != nil {
				return err
			}
			h := sha256.New()
			n, err := io.CopyBuffer(io.MultiWriter(&writebackFile{f: f}, h), onlyReader{tr}, buf)
			if err = closeFile(f, hdr, sync, err); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if want != nil {
				w, ok := want[name]
				if !ok {
					return fmt.Errorf("%s is not in the manifest", name)
				}
				if got := hex.EncodeToString(h.Sum(nil)); got != w.SHA256 || n != w.Size {
					return fmt.Errorf("%s: sha256 %s (%d bytes) does not match the manifest's %s (%d bytes)", name, got, n, w.SHA256, w.Size)
				}
				seen++
			}
		case tar.TypeSymlink:
			if err := root.Symlink(hdr.Linkname, name); err != nil {
				return err
			}
		case tar.TypeLink:
			target := path.Clean(hdr.Linkname)
			if err := root.Link(target, name); err != nil {
				return err
			}
		default:
			log.Warn("skipping unsupported tar entry", "name", name, "type", string(hdr.Typeflag))
			continue
		}
		if asRoot {
			if err := root.Lchown(name, hdr.Uid, hdr.Gid); err != nil {
				return err
			}
		}
		if hdr.Typeflag == tar.TypeReg {
			if err := root.Chtimes(name, hdr.ModTime, hdr.ModTime); err != nil {
				return err
			}
		}
	}
	if want != nil && seen != len(want) {
		return fmt.Errorf("the archive holds %d of the %d files its manifest lists", seen, len(want))
	}
	// Directories stay writable while filling; set their modes last, deepest first.
	for i := len(dirs) - 1; i >= 0; i-- {
		d := dirs[i]
		if asRoot {
			if err := root.Lchown(d.name, d.hdr.Uid, d.hdr.Gid); err != nil {
				return err
			}
		}
		if d.name == "." {
			continue // the caller sets the top directory's mode after renaming
		}
		if err := root.Chmod(d.name, d.hdr.FileInfo().Mode().Perm()); err != nil {
			return err
		}
		root.Chtimes(d.name, d.hdr.ModTime, d.hdr.ModTime)
	}
	return nil
}
