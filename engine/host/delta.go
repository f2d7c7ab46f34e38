package host

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
)

// A delta copy of a directory sends, of each regular file the destination
// already holds at the same path, only the blocks that differ. The
// destination hashes what it holds (fs.blocksums); the source hashes its
// files and sends the blocks whose sha256 differs, in a tar entry that
// names them; the destination builds each such file from its own copy and
// those blocks, in the new directory that then replaces the old one, as
// any copy's does. The stream's sha256 is checked as any copy's is.
//
// The source reads each file twice, to hash it and then for the blocks it
// sends, so a delta copy is for files that do not change meanwhile: those
// of a frozen workload.

// BlockSize is the unit a delta copy compares and sends.
const BlockSize = 1 << 20

// Blocks are a file's size and the sha256 of each of its blocks.
type Blocks struct {
	Size int64    `json:"size"`
	Sums [][]byte `json:"sums"`
}

// BlockSums are a directory's regular files' blocks, by slash-separated
// path relative to it.
type BlockSums map[string]Blocks

// The PAX records of a delta entry: the file's whole size, and the blocks
// that follow as its data, as ranges ("0-3,7"). The other blocks are the
// destination's.
const (
	paxDeltaSize   = "MIG.delta.size"
	paxDeltaBlocks = "MIG.delta.blocks"
)

// blockSums is the "fs.blocksums" action: the blocks of the regular files
// under a directory. A path that is missing, or not a directory, has none.
func blockSums(ctx context.Context, c *Call, req PathRequest) (BlockSums, error) {
	dir, err := cleanPath(req.Path)
	if err != nil {
		return nil, err
	}
	out := BlockSums{}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return out, nil
	}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		b, err := fileBlocks(p)
		if err != nil {
			return err
		}
		out[filepath.ToSlash(rel)] = b
		return nil
	})
	return out, err
}

// blockBuf is buf cut to a block, or a new one if it is too small.
func blockBuf(buf []byte) []byte {
	if len(buf) < BlockSize {
		return make([]byte, BlockSize)
	}
	return buf[:BlockSize]
}

// fileBlocks hashes path's blocks, on every core.
func fileBlocks(path string) (Blocks, error) {
	f, err := os.Open(path)
	if err != nil {
		return Blocks{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Blocks{}, err
	}
	size := fi.Size()
	b := Blocks{Size: size, Sums: make([][]byte, (size+BlockSize-1)/BlockSize)}
	workers := min(runtime.GOMAXPROCS(0), len(b.Sums))
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			buf := make([]byte, BlockSize)
			for i := w; i < len(b.Sums); i += workers {
				n := blockLen(i, size)
				if _, err := f.ReadAt(buf[:n], int64(i)*BlockSize); err != nil {
					errs[w] = fmt.Errorf("%s changed size while being read: %w", path, err)
					return
				}
				s := sha256.Sum256(buf[:n])
				b.Sums[i] = s[:]
			}
		})
	}
	wg.Wait()
	return b, errors.Join(errs...)
}

// changedBlocks lists the blocks of mine that theirs lacks or holds
// otherwise.
func changedBlocks(mine, theirs Blocks) []int {
	var out []int
	for i, s := range mine.Sums {
		if i >= len(theirs.Sums) || !bytes.Equal(s, theirs.Sums[i]) {
			out = append(out, i)
		}
	}
	return out
}

// blockLen is the length of block i of a file of size bytes.
func blockLen(i int, size int64) int64 {
	return min(BlockSize, size-int64(i)*BlockSize)
}

// formatRanges writes sorted block numbers as ranges: "0-3,7".
func formatRanges(blocks []int) string {
	var b strings.Builder
	for i := 0; i < len(blocks); {
		j := i
		for j+1 < len(blocks) && blocks[j+1] == blocks[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(blocks[i]))
		if j > i {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(blocks[j]))
		}
		i = j + 1
	}
	return b.String()
}

// parseRanges reads formatRanges' output, for a file of nblocks blocks.
func parseRanges(s string, nblocks int) ([]int, error) {
	var out []int
	if s == "" {
		return out, nil
	}
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return nil, fmt.Errorf("bad block range %q", part)
		}
		z := a
		if isRange {
			if z, err = strconv.Atoi(hi); err != nil {
				return nil, fmt.Errorf("bad block range %q", part)
			}
		}
		if a < 0 || z < a || z >= nblocks || (len(out) > 0 && a <= out[len(out)-1]) {
			return nil, fmt.Errorf("bad block range %q for %d blocks", part, nblocks)
		}
		for i := a; i <= z; i++ {
			out = append(out, i)
		}
	}
	return out, nil
}

// writeDelta writes f, of which the destination holds theirs, to tw as a
// delta entry under hdr: only the blocks that differ. mine, when its size
// is the file's, are the file's blocks as hashed before (beside the
// destination's); otherwise they are hashed now. Each block it sends must
// still hash as it did when it was compared.
func writeDelta(tw io.Writer, f *os.File, size int64, mine, theirs Blocks, hdr writeHeader, buf []byte) error {
	buf = blockBuf(buf)
	if mine.Size != size || int64(len(mine.Sums)) != (size+BlockSize-1)/BlockSize {
		var err error
		if mine, err = fileBlocks(f.Name()); err != nil {
			return err
		}
	}
	if mine.Size != size {
		return fmt.Errorf("%s changed size while being read", f.Name())
	}
	send := changedBlocks(mine, theirs)
	var n int64
	for _, i := range send {
		n += blockLen(i, size)
	}
	if err := hdr(n, map[string]string{paxDeltaSize: strconv.FormatInt(size, 10), paxDeltaBlocks: formatRanges(send)}); err != nil {
		return err
	}
	for _, i := range send {
		b := buf[:blockLen(i, size)]
		if _, err := f.ReadAt(b, int64(i)*BlockSize); err != nil {
			return err
		}
		if s := sha256.Sum256(b); !bytes.Equal(s[:], mine.Sums[i]) {
			return fmt.Errorf("%s changed while being read", f.Name())
		}
		if _, err := tw.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// writeHeader writes a tar entry's header with the data size and PAX
// records given.
type writeHeader func(size int64, pax map[string]string) error

// readDelta builds the file name in root from the destination's own copy
// in basis and the blocks of a delta entry that r holds.
func readDelta(r io.Reader, root, basis *os.Root, name string, pax map[string]string, dataSize int64, buf []byte) (*os.File, error) {
	buf = blockBuf(buf)
	if basis == nil {
		return nil, fmt.Errorf("%s: a delta entry, but the destination has no copy to build it from", name)
	}
	size, err := strconv.ParseInt(pax[paxDeltaSize], 10, 64)
	if err != nil || size < 0 {
		return nil, fmt.Errorf("%s: bad delta size %q", name, pax[paxDeltaSize])
	}
	blocks, err := parseRanges(pax[paxDeltaBlocks], int((size+BlockSize-1)/BlockSize))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	var want int64
	for _, i := range blocks {
		want += blockLen(i, size)
	}
	if want != dataSize {
		return nil, fmt.Errorf("%s: a delta entry of %d bytes for blocks of %d", name, dataSize, want)
	}
	old, err := basis.Open(name)
	if err != nil {
		return nil, fmt.Errorf("%s: the destination's copy: %w", name, err)
	}
	defer old.Close()
	f, err := root.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	// In the kernel where it can (copy_file_range).
	_, err = io.Copy(f, io.LimitReader(old, size))
	if err == nil {
		err = f.Truncate(size)
	}
	for _, i := range blocks {
		if err != nil {
			break
		}
		b := buf[:blockLen(i, size)]
		if _, err = io.ReadFull(r, b); err == nil {
			_, err = f.WriteAt(b, int64(i)*BlockSize)
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return f, nil
}
