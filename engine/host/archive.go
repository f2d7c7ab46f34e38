package host

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/klauspost/compress/zstd"
)

// An archive is a zstd-compressed tar of a directory. Its last entry,
// manifestName, is a JSON manifest of every regular file's size and sha256.
// fs.unarchive checks the whole archive against it before extracting.
const manifestName = ".mig-manifest.json"

type manifest struct {
	Version int                `json:"version"`
	Files   map[string]FileSum `json:"files"`
}

// ArchiveRequest is the request of fs.archive and fs.unarchive.
type ArchiveRequest struct {
	Source      string `json:"source"`
	Destination string `json:"destination"`
	// KeepAside keeps what the destination held before aside (aside.go).
	KeepAside bool `json:"keep_aside,omitempty"`
}

// ArchiveResult is what fs.archive returns.
type ArchiveResult struct {
	Path     string             `json:"path"`
	Bytes    int64              `json:"bytes"`
	SHA256   string             `json:"sha256"`
	Manifest map[string]FileSum `json:"manifest"`
	Placed   *Placed            `json:"placed,omitempty"`
}

// UnarchiveResult is what fs.unarchive returns.
type UnarchiveResult struct {
	Path   string  `json:"path"`
	Files  int     `json:"files"`
	Bytes  int64   `json:"bytes"` // sum of the files' sizes
	Placed *Placed `json:"placed,omitempty"`
}

// archive is the "fs.archive" action: it packs a directory into a .tar.zst
// file with a manifest, written under a temporary name and renamed.
func archive(ctx context.Context, c *Call, req ArchiveRequest) (res ArchiveResult, err error) {
	src, err := cleanPath(req.Source)
	if err != nil {
		return ArchiveResult{}, err
	}
	dest, err := cleanPath(req.Destination)
	if err != nil {
		return ArchiveResult{}, err
	}
	if fi, err := os.Stat(src); err != nil {
		return ArchiveResult{}, err
	} else if !fi.IsDir() {
		return ArchiveResult{}, fmt.Errorf("%s is not a directory", src)
	}
	if _, err := os.Lstat(filepath.Join(src, manifestName)); err == nil {
		return ArchiveResult{}, fmt.Errorf("%s holds %s, a name archives reserve", src, manifestName)
	}
	part, err := newPartial(dest, c)
	if err != nil {
		return ArchiveResult{}, err
	}
	defer part.release()
	tmp := part.path
	defer func() {
		if err != nil {
			err = fmt.Errorf("archive %s: %w (partial archive removed)", src, err)
		}
	}()
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return ArchiveResult{}, err
	}
	defer f.Close()
	cw := &countHash{w: f, h: sha256.New()}
	bw := bufio.NewWriterSize(cw, chunkSize)
	zw, err := zstd.NewWriter(bw, zstd.WithEncoderConcurrency(2))
	if err != nil {
		return ArchiveResult{}, err
	}
	tw := tar.NewWriter(zw)
	m := manifest{Version: 1, Files: map[string]FileSum{}}
	if err := writeTar(ctx, tw, src, tarOptions{sums: m.Files}); err != nil {
		zw.Close()
		return ArchiveResult{}, err
	}
	mb, _ := json.MarshalIndent(m, "", " ")
	hdr := &tar.Header{Name: manifestName, Mode: 0o600, Size: int64(len(mb)), ModTime: time.Now(), Typeflag: tar.TypeReg}
	if err := tw.WriteHeader(hdr); err != nil {
		zw.Close()
		return ArchiveResult{}, err
	}
	if _, err := tw.Write(mb); err != nil {
		zw.Close()
		return ArchiveResult{}, err
	}
	for _, step := range []func() error{tw.Close, zw.Close, bw.Flush, f.Sync, f.Close} {
		if err := step(); err != nil {
			return ArchiveResult{}, err
		}
	}
	pl, err := place(tmp, dest, req.KeepAside, true)
	if err != nil {
		return ArchiveResult{}, err
	}
	sum := hex.EncodeToString(cw.h.Sum(nil))
	c.Log.Debug("archived", "path", dest, "bytes", cw.n, "files", len(m.Files))
	return ArchiveResult{Path: dest, Bytes: cw.n, SHA256: sum, Manifest: m.Files, Placed: &pl}, nil
}

// unarchive is the "fs.unarchive" action. It refuses an archive whose files
// do not match its manifest: it reads the whole archive and checks it first,
// then extracts to a temporary directory (checking again) and renames it to
// the destination. What the destination held is deleted, or kept aside
// with KeepAside.
func unarchive(ctx context.Context, c *Call, req ArchiveRequest) (res UnarchiveResult, err error) {
	src, err := cleanPath(req.Source)
	if err != nil {
		return UnarchiveResult{}, err
	}
	dest, err := cleanPath(req.Destination)
	if err != nil {
		return UnarchiveResult{}, err
	}
	m, err := verifyArchive(ctx, src)
	if err != nil {
		return UnarchiveResult{}, fmt.Errorf("refusing to extract %s: %w", src, err)
	}
	part, err := newPartial(dest, c)
	if err != nil {
		return UnarchiveResult{}, err
	}
	defer part.release()
	tmp := part.path
	defer func() {
		if err != nil {
			err = fmt.Errorf("extract %s: %w (partial extraction removed)", src, err)
		}
	}()
	var total int64
	for _, f := range m.Files {
		total += f.Size
	}
	if err := roomFor(filepath.Dir(dest), total, "the extracted files"); err != nil {
		return UnarchiveResult{}, err
	}
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return UnarchiveResult{}, err
	}
	err = withArchive(ctx, src, func(r io.Reader) error {
		return readTar(r, tmp, c.Log, m.Files, manifestName, true, nil)
	})
	if err != nil {
		return UnarchiveResult{}, err
	}
	if err := syncDir(tmp); err != nil {
		return UnarchiveResult{}, err
	}
	pl, err := place(tmp, dest, req.KeepAside, true)
	if err != nil {
		return UnarchiveResult{}, err
	}
	return UnarchiveResult{Path: dest, Files: len(m.Files), Bytes: total, Placed: &pl}, nil
}

// verifyArchive reads an archive through and checks every regular file
// against the manifest.
func verifyArchive(ctx context.Context, path string) (manifest, error) {
	var m manifest
	got := map[string]FileSum{}
	found := false
	err := withArchive(ctx, path, func(r io.Reader) error {
		tr := tar.NewReader(r)
		buf := make([]byte, chunkSize)
		for {
			e, err := nextEntry(tr)
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			if e.hdr.Typeflag != tar.TypeReg {
				continue
			}
			if e.name == manifestName {
				if err := json.NewDecoder(io.LimitReader(tr, 64<<20)).Decode(&m); err != nil {
					return fmt.Errorf("manifest: %w", err)
				}
				found = true
				continue
			}
			h := sha256.New()
			n, err := io.CopyBuffer(h, onlyReader{tr}, buf)
			if err != nil {
				return err
			}
			got[e.name] = FileSum{Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}
		}
	})
	if err != nil {
		return m, err
	}
	if !found {
		return m, errors.New("the archive has no manifest")
	}
	for name, w := range m.Files {
		g, ok := got[name]
		if !ok {
			return m, fmt.Errorf("%s is in the manifest but not in the archive", name)
		}
		if g != w {
			return m, fmt.Errorf("%s: sha256 %s (%d bytes) does not match the manifest's %s (%d bytes)", name, g.SHA256, g.Size, w.SHA256, w.Size)
		}
	}
	for name := range got {
		if _, ok := m.Files[name]; !ok {
			return m, fmt.Errorf("%s is not in the manifest", name)
		}
	}
	return m, nil
}

// withArchive calls fn with the decompressed tar stream of an archive.
func withArchive(ctx context.Context, path string, fn func(io.Reader) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := zstd.NewReader(bufio.NewReaderSize(f, chunkSize), zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
	if err != nil {
		return err
	}
	defer zr.Close()
	return fn(ctxReader{ctx, zr})
}

// ctxReader stops reading once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

// countHash counts and hashes what it writes through.
type countHash struct {
	w io.Writer
	h hash.Hash
	n int64
}

func (c *countHash) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	return n, err
}
