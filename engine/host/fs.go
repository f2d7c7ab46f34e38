package host

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
)

// PathRequest names one path on a host.
type PathRequest struct {
	Path string `json:"path"`
	// Room, for fs.stat, also measures what a copy of Path needs and
	// where it could go: StatResult.Bytes and Free.
	Room bool `json:"room,omitempty"`
}

// TransferResult is what fs.send and fs.recv return.
type TransferResult struct {
	Path   string `json:"path"`
	Type   string `json:"type"` // "file" or "dir"
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
	// Placed says what fs.recv displaced at the path (aside.go).
	Placed *Placed `json:"placed,omitempty"`
}

func decode(c *Call, v any) error {
	if err := json.Unmarshal(c.Req, v); err != nil {
		return fmt.Errorf("decode request: %w", err)
	}
	return nil
}

// cleanPath requires an absolute path other than / and cleans it.
func cleanPath(p string) (string, error) {
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("path %q is not absolute", p)
	}
	p = filepath.Clean(p)
	if p == "/" {
		return "", errors.New("path / is not allowed here")
	}
	return p, nil
}

// SendRequest is the request of fs.send.
type SendRequest struct {
	Path string `json:"path"`
	// Connect, when set, is the address of a direct receiver (direct.go)
	// to send to instead of the output stream, with its ticket's fields.
	Connect     string `json:"connect,omitempty"`
	Fingerprint string `json:"fingerprint,omitempty"`
	Token       string `json:"token,omitempty"`
	// Basis, for a directory, is what the destination holds of it
	// (fs.blocksums): the files it lists go as delta entries (delta.go).
	Basis BlockSums `json:"basis,omitempty"`
	// Sums are the source's own blocks, hashed beside the destination's
	// (the files a delta copy sends are frozen): they spare a pass.
	Sums BlockSums `json:"sums,omitempty"`
	// Torn copies files that change while being read (tarOptions.torn).
	Torn bool `json:"torn,omitempty"`
}

// RecvRequest is the request of fs.recv.
type RecvRequest struct {
	Path string `json:"path"`
	// Listen, when set, is a TCP address to take the stream on directly
	// from the source (direct.go) instead of the input stream.
	Listen string `json:"listen,omitempty"`
	// From, with Listen, lists the only addresses the source may connect
	// from; empty admits any (the token still has to match).
	From []string `json:"from,omitempty"`
	// Merge, for a directory, adds the received files to an existing
	// directory at Path instead of replacing it (files of the same name
	// are replaced). The files land only after the checksum matched.
	Merge bool `json:"merge,omitempty"`
	// KeepAside keeps what the path held before aside, for fs.put-back
	// or the run's commit (aside.go), instead of deleting it.
	KeepAside bool `json:"keep_aside,omitempty"`
	// NoSync skips the fsyncs that make the copy survive a power loss of
	// the destination: for checkpoint images, which the restore reads once
	// and the source keeps until the run commits.
	NoSync bool `json:"no_sync,omitempty"`
	// Delta builds the files of delta entries from their namesakes in
	// the directory at Path (delta.go).
	Delta bool `json:"delta,omitempty"`
}

// send is the "fs.send" action: it writes a file, or a directory as tar, to
// its output as a transfer stream (stream.go).
func send(ctx context.Context, c *Call, req SendRequest) (res TransferResult, err error) {
	if req.Connect != "" {
		conn, err := dialDirect(ctx, req.Connect, ticket{Fingerprint: req.Fingerprint, Token: req.Token})
		if err != nil {
			return TransferResult{}, err
		}
		return sendOver(ctx, conn, req.Path, req, c.Log)
	}
	return writeTransfer(ctx, c.Out, req.Path, req, c.Log)
}

// SendOver writes path to a direct receiver's connection as a transfer
// stream, then closes the connection.
func SendOver(ctx context.Context, conn *tls.Conn, path string, log hclog.Logger) (TransferResult, error) {
	return sendOver(ctx, conn, path, SendRequest{}, log)
}

// sendOver is SendOver with a request's options.
func sendOver(ctx context.Context, conn *tls.Conn, path string, req SendRequest, log hclog.Logger) (res TransferResult, err error) {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if res, err = writeTransfer(ctx, conn, path, req, log); err != nil {
		return res, err
	}
	return res, conn.CloseWrite()
}

// writeTransfer writes path, a file or a directory, to out as a transfer
// stream, with req's options for a directory (Basis, Sums, Torn).
func writeTransfer(ctx context.Context, out io.Writer, path string, req SendRequest, log hclog.Logger) (TransferResult, error) {
	p, err := cleanPath(path)
	if err != nil {
		return TransferResult{}, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return TransferResult{}, err
	}
	h := streamHeader{Mode: uint32(fi.Mode().Perm())}
	switch {
	case fi.Mode().IsRegular():
		h.Type, h.Size = "file", fi.Size()
	case fi.IsDir():
		h.Type = "dir"
		if h.Size, err = tarSize(p, req.Torn); err != nil {
			return TransferResult{}, err
		}
	default:
		return TransferResult{}, fmt.Errorf("%s is neither a file nor a directory", p)
	}
	if err := writeStreamHeader(out, h); err != nil {
		return TransferResult{}, err
	}
	cw := newChunkWriter(ctx, out)
	if h.Type == "file" && req.Torn {
		err = copyTorn(cw, p, h.Size)
	} else if h.Type == "file" {
		err = copyFile(cw, p)
	} else {
		tw := tar.NewWriter(cw)
		if err = writeTar(ctx, tw, p, tarOptions{basis: req.Basis, mine: req.Sums, torn: req.Torn}); err == nil {
			err = tw.Close()
		}
	}
	if err != nil {
		return TransferResult{}, fmt.Errorf("send %s: %w", p, err)
	}
	sum, err := cw.end()
	if err != nil {
		return TransferResult{}, fmt.Errorf("send %s: %w", p, err)
	}
	log.Debug("sent", "path", p, "bytes", cw.n, "sha256", sum)
	return TransferResult{Path: p, Type: h.Type, Bytes: cw.n, SHA256: sum}, nil
}

func copyFile(w io.ReaderFrom, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = w.ReadFrom(onlyReader{f})
	return err
}

// copyTorn writes size bytes of the file at path to w: as many as it
// has, then zeros (tarOptions.torn).
func copyTorn(w io.Writer, path string, size int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.Copy(w, io.LimitReader(onlyReader{f}, size))
	if err != nil {
		return err
	}
	_, err = io.CopyN(w, zeros{}, size-n)
	return err
}

// zeros reads as endless zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// onlyReader hides a file's WriterTo so copies go through the given buffer.
type onlyReader struct{ io.Reader }

// recv is the "fs.recv" action: it reads a transfer stream from its input
// and writes it at the request's path. It writes to a temporary name next to
// the path and renames it once the checksum matched, so a partial copy never
// looks complete. Leftovers of an earlier failed attempt are removed first.
func recv(ctx context.Context, c *Call, req RecvRequest) (res TransferResult, err error) {
	dest, err := cleanPath(req.Path)
	if err != nil {
		return TransferResult{}, err
	}
	in := c.In
	if req.Listen != "" {
		conn, err := listenDirect(ctx, req.Listen, req.From, c.Out, c.Log)
		if err != nil {
			return TransferResult{}, err
		}
		defer conn.Close()
		stop := context.AfterFunc(ctx, func() { conn.Close() })
		defer stop()
		in = conn
	}
	br := bufio.NewReaderSize(in, chunkSize)
	h, err := readStreamHeader(br)
	if err != nil {
		return TransferResult{}, err
	}
	part, err := newPartial(dest, c)
	if err != nil {
		return TransferResult{}, err
	}
	defer part.release()
	tmp := part.path
	defer func() {
		if err != nil {
			err = fmt.Errorf("receive %s: %w (partial copy removed)", dest, err)
		}
	}()
	if err := roomFor(filepath.Dir(dest), h.Size, "the copy"); err != nil {
		return TransferResult{}, err
	}
	cr := newChunkReader(ctx, br, h.Size, c.Progress)
	mode := fs.FileMode(h.Mode).Perm()
	sync := !req.NoSync
	if h.Type == "file" {
		err = recvFile(tmp, cr, mode, sync)
	} else {
		var basis *os.Root
		if req.Delta {
			// What the path holds: the delta entries' files are built
			// from it before it is replaced.
			if fi, serr := os.Stat(dest); serr == nil && fi.IsDir() {
				if basis, err = os.OpenRoot(dest); err != nil {
					return TransferResult{}, err
				}
				defer basis.Close()
			}
		}
		err = recvDir(tmp, cr, mode, c, sync, basis)
	}
	if err != nil {
		return TransferResult{}, err
	}
	sum, err := cr.finish()
	if err != nil {
		return TransferResult{}, err
	}
	var pl Placed
	if req.Merge && h.Type != "file" {
		pl, err = mergeInto(tmp, dest, req.KeepAside, sync)
	} else {
		pl, err = place(tmp, dest, req.KeepAside, sync)
	}
	if err != nil {
		return TransferResult{}, err
	}
	c.Log.Debug("received", "path", dest, "bytes", cr.n, "sha256", sum, "aside", pl.Aside)
	return TransferResult{Path: dest, Type: h.Type, Bytes: cr.n, SHA256: sum, Placed: &pl}, nil
}

func recvFile(tmp string, r io.Reader, mode fs.FileMode, sync bool) error {
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := io.Copy(&writebackFile{f: f}, r); err != nil {
		return err
	}
	if err := f.Chmod(mode); err != nil {
		return err
	}
	if sync {
		if err := f.Sync(); err != nil {
			return err
		}
	}
	return f.Close()
}

func recvDir(tmp string, cr *chunkReader, mode fs.FileMode, c *Call, sync bool, basis *os.Root) error {
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return err
	}
	if err := readTar(cr, tmp, c.Log, nil, "", sync, basis); err != nil {
		return err
	}
	// The checksum covers the whole payload: read the rest before trusting it.
	if _, err := cr.finish(); err != nil {
		return err
	}
	if sync {
		if err := syncDir(tmp); err != nil {
			return err
		}
	}
	return os.Chmod(tmp, mode)
}

func escapeGlob(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `*`, `\*`, `?`, `\?`, `[`, `\[`)
	return r.Replace(s)
}

func randomSuffix() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// MkdirRequest is the request of fs.mkdir.
type MkdirRequest struct {
	Path string `json:"path"`
	Mode uint32 `json:"mode,omitempty"` // default 0700
}

// mkdir is the "fs.mkdir" action: it creates a directory and its parents.
func mkdir(ctx context.Context, c *Call, req MkdirRequest) (None, error) {
	p, err := cleanPath(req.Path)
	if err != nil {
		return None{}, err
	}
	mode := fs.FileMode(req.Mode).Perm()
	if req.Mode == 0 {
		mode = 0o700
	}
	if err := os.MkdirAll(p, mode); err != nil {
		return None{}, err
	}
	return None{}, os.Chmod(p, mode)
}

// RemoveRequest is the request of fs.remove.
type RemoveRequest struct {
	Path      string `json:"path"`
	Recursive bool   `json:"recursive,omitempty"`
}

// remove is the "fs.remove" action. A missing path is not an error.
func remove(ctx context.Context, c *Call, req RemoveRequest) (None, error) {
	p, err := cleanPath(req.Path)
	if err != nil {
		return None{}, err
	}
	if p == "/" {
		return None{}, errors.New("refusing to remove /")
	}
	if req.Recursive {
		err = os.RemoveAll(p)
	} else {
		err = os.Remove(p)
	}
	if errors.Is(err, fs.ErrNotExist) {
		err = nil
	}
	return None{}, err
}

// StatResult is what fs.stat returns.
type StatResult struct {
	Exists  bool      `json:"exists"`
	Type    string    `json:"type,omitempty"` // "file", "dir", "symlink" or "other"
	Size    int64     `json:"size"`
	Mode    uint32    `json:"mode"`
	ModTime time.Time `json:"mtime"`
	// With Room: the regular files' bytes at Path (a directory's, all
	// the way down), and the room root has in the file system of Path,
	// or of its nearest existing parent (-1: unknown).
	Bytes int64 `json:"bytes,omitempty"`
	Free  int64 `json:"free,omitempty"`
	// Users are, with Room, the processes that have files open at Path
	// ("pid 123 (mariadbd)"), a few at most.
	Users []string `json:"users,omitempty"`
}

// stat is the "fs.stat" action. A missing path has Exists false.
func stat(ctx context.Context, c *Call, req PathRequest) (StatResult, error) {
	p, err := cleanPath(req.Path)
	if err != nil {
		return StatResult{}, err
	}
	var res StatResult
	if req.Room {
		res.Free = -1
		for dir := p; ; dir = filepath.Dir(dir) {
			if _, err := os.Stat(dir); err == nil {
				res.Free = FreeBytes(dir)
				break
			}
			if dir == "/" {
				break
			}
		}
	}
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return res, nil
	}
	if err != nil {
		return StatResult{}, err
	}
	res.Exists, res.Size, res.Mode, res.ModTime = true, fi.Size(), uint32(fi.Mode().Perm()), fi.ModTime()
	if req.Room {
		res.Bytes, err = treeBytes(ctx, p)
		if err != nil {
			return StatResult{}, err
		}
		res.Users = usersOf(p, 3)
	}
	switch {
	case fi.Mode().IsRegular():
		res.Type = "file"
	case fi.IsDir():
		res.Type = "dir"
	case fi.Mode()&fs.ModeSymlink != 0:
		res.Type = "symlink"
	default:
		res.Type = "other"
	}
	return res, nil
}

// usersOf lists up to most processes that have a file open at p, or
// below it, or run there.
func usersOf(p string, most int) []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		dir := filepath.Join("/proc", e.Name())
		links := []string{filepath.Join(dir, "cwd")}
		fds, _ := os.ReadDir(filepath.Join(dir, "fd"))
		for _, fd := range fds {
			links = append(links, filepath.Join(dir, "fd", fd.Name()))
		}
		for _, l := range links {
			if t, err := os.Readlink(l); err == nil && (t == p || strings.HasPrefix(t, p+"/")) {
				comm, _ := os.ReadFile(filepath.Join(dir, "comm"))
				out = append(out, fmt.Sprintf("pid %d (%s)", pid, strings.TrimSpace(string(comm))))
				break
			}
		}
		if len(out) == most {
			break
		}
	}
	return out
}

// treeBytes adds up the sizes of the regular files at p.
func treeBytes(ctx context.Context, p string) (int64, error) {
	var n int64
	err := filepath.WalkDir(p, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	return n, err
}

// SumResult is what fs.sha256 returns.
type SumResult struct {
	SHA256 string `json:"sha256"`
	Bytes  int64  `json:"bytes"`
}

// sha256Sum is the "fs.sha256" action: the sha256 of a file.
func sha256Sum(ctx context.Context, c *Call, req PathRequest) (SumResult, error) {
	p, err := cleanPath(req.Path)
	if err != nil {
		return SumResult{}, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return SumResult{}, err
	}
	if !fi.Mode().IsRegular() {
		return SumResult{}, fmt.Errorf("%s is not a regular file", p)
	}
	sum, err := fileSum(p)
	if err != nil {
		return SumResult{}, err
	}
	return SumResult{SHA256: sum, Bytes: fi.Size()}, nil
}
