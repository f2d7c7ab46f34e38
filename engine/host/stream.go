package host

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"
)

// The transfer stream that fs.send writes and fs.recv reads:
//
//	"MIGSTREAM1\n"
//	a JSON line: streamHeader
//	chunks: a 4-byte big-endian length, then that many payload bytes
//	a zero-length chunk
//	32 bytes: the sha256 of the payload
//
// The payload is the file's bytes, or a tar stream of a directory. The
// sender hashes while it reads, the receiver while it writes, so the sum
// covers what crossed every hop.

const streamMagic = "MIGSTREAM1\n"

type streamHeader struct {
	Type string `json:"type"` // "file" or "dir"
	Size int64  `json:"size"` // payload size; an estimate for a directory
	Mode uint32 `json:"mode"` // permission bits of the file or top directory
}

func writeStreamHeader(w io.Writer, h streamHeader) error {
	b, _ := json.Marshal(h)
	_, err := io.WriteString(w, streamMagic+string(b)+"\n")
	return err
}

func readStreamHeader(r *bufio.Reader) (streamHeader, error) {
	var h streamHeader
	magic := make([]byte, len(streamMagic))
	if _, err := io.ReadFull(r, magic); err != nil {
		return h, fmt.Errorf("read stream header: %w", err)
	}
	if string(magic) != streamMagic {
		return h, errors.New("not a mig transfer stream")
	}
	line, err := r.ReadSlice('\n')
	if err != nil {
		return h, fmt.Errorf("read stream header: %w", err)
	}
	if err := json.Unmarshal(line, &h); err != nil {
		return h, fmt.Errorf("decode stream header: %w", err)
	}
	if h.Type != "file" && h.Type != "dir" {
		return h, fmt.Errorf("stream header: unknown type %q", h.Type)
	}
	return h, nil
}

// chunkWriter frames the payload into chunks of up to chunkSize bytes,
// length included, each written with one Write (so one chunk makes one data
// frame), and hashes it. Call end to flush it.
type chunkWriter struct {
	ctx context.Context
	w   io.Writer
	h   hash.Hash
	n   int64
	buf []byte // 4-byte length, then the chunk so far
}

func newChunkWriter(ctx context.Context, w io.Writer) *chunkWriter {
	return &chunkWriter{ctx: ctx, w: w, h: sha256.New(), buf: make([]byte, 4, chunkSize)}
}

func (c *chunkWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		room := cap(c.buf) - len(c.buf)
		k := min(room, len(p))
		c.buf = append(c.buf, p[:k]...)
		c.h.Write(p[:k])
		c.n += int64(k)
		n += k
		p = p[k:]
		if len(c.buf) == cap(c.buf) {
			if err := c.flush(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// ReadFrom fills the chunk buffer straight from r.
func (c *chunkWriter) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	for {
		k, err := r.Read(c.buf[len(c.buf):cap(c.buf)])
		c.h.Write(c.buf[len(c.buf) : len(c.buf)+k])
		c.buf = c.buf[:len(c.buf)+k]
		c.n += int64(k)
		total += int64(k)
		if len(c.buf) == cap(c.buf) {
			if ferr := c.flush(); ferr != nil {
				return total, ferr
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

func (c *chunkWriter) flush() error {
	if err := c.ctx.Err(); err != nil {
		return err
	}
	if len(c.buf) == 4 {
		return nil
	}
	binary.BigEndian.PutUint32(c.buf[:4], uint32(len(c.buf)-4))
	_, err := c.w.Write(c.buf)
	c.buf = c.buf[:4]
	return err
}

// end flushes the last chunk, writes the final empty chunk and the
// trailer, and returns the sum.
func (c *chunkWriter) end() (string, error) {
	if err := c.flush(); err != nil {
		return "", err
	}
	sum := c.h.Sum(nil)
	var b [4 + sha256.Size]byte
	copy(b[4:], sum)
	if _, err := c.w.Write(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(sum), nil
}

// chunkReader reads the payload, hashes it and reports progress. At the
// end of the payload it reads the trailer and fails on a mismatch.
type chunkReader struct {
	ctx      context.Context
	r        *bufio.Reader
	h        hash.Hash
	left     int // bytes left in the current chunk
	n        int64
	total    int64
	progress func(Progress)
	last     time.Time
	sum      string // set once the trailer checked out
	err      error
}

func newChunkReader(ctx context.Context, r *bufio.Reader, total int64, progress func(Progress)) *chunkReader {
	return &chunkReader{ctx: ctx, r: r, h: sha256.New(), total: total, progress: progress}
}

// next returns up to limit bytes of the payload, hashed and counted, out of
// the reader's buffer: they are valid until the next call. At the end of
// the payload it returns io.EOF once the trailer checked out.
func (c *chunkReader) next(limit int) ([]byte, error) {
	if c.err != nil {
		return nil, c.err
	}
	if err := c.ctx.Err(); err != nil {
		c.err = err
		return nil, err
	}
	if c.left == 0 {
		var lenb [4]byte
		if _, err := io.ReadFull(c.r, lenb[:]); err != nil {
			c.err = streamCut(err)
			return nil, c.err
		}
		c.left = int(binary.BigEndian.Uint32(lenb[:]))
		if c.left == 0 {
			c.err = c.trailer()
			return nil, c.err
		}
	}
	if c.r.Buffered() == 0 {
		if _, err := c.r.Peek(1); err != nil {
			c.err = streamCut(err)
			return nil, c.err
		}
	}
	p, _ := c.r.Peek(min(limit, c.left, c.r.Buffered()))
	c.r.Discard(len(p))
	c.h.Write(p)
	c.left -= len(p)
	c.n += int64(len(p))
	if now := time.Now(); now.Sub(c.last) > 200*time.Millisecond {
		c.last = now
		c.progress(Progress{Done: c.n, Total: max(c.total, c.n), Unit: "bytes"})
	}
	return p, nil
}

func (c *chunkReader) Read(p []byte) (int, error) {
	b, err := c.next(len(p))
	return copy(p, b), err
}

// WriteTo writes the payload to w straight from the reader's buffer.
func (c *chunkReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		b, err := c.next(chunkSize)
		if len(b) > 0 {
			n, werr := w.Write(b)
			total += int64(n)
			if werr != nil {
				return total, werr
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

func (c *chunkReader) trailer() error {
	var want [sha256.Size]byte
	if _, err := io.ReadFull(c.r, want[:]); err != nil {
		return streamCut(err)
	}
	got := c.h.Sum(nil)
	if string(got) != string(want[:]) {
		return fmt.Errorf("checksum mismatch: the source sent sha256 %x, %d bytes arrived with sha256 %x", want, c.n, got)
	}
	c.sum = hex.EncodeToString(got)
	c.progress(Progress{Done: c.n, Total: c.n, Unit: "bytes"})
	return io.EOF
}

// finish reads what is left of the payload and the trailer, and returns the
// verified sum.
func (c *chunkReader) finish() (string, error) {
	if _, err := io.Copy(io.Discard, c); err != nil {
		return "", err
	}
	if c.sum == "" {
		return "", c.err
	}
	return c.sum, nil
}

func streamCut(err error) error {
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("transfer stream cut short: %w", err)
}
