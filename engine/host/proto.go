package host

// The agent protocol, spoken between mig (the client) and `mig agent` on a
// remote host over the stdin and stdout of one SSH session. A session runs
// actions one after another: the next request follows the final frame of
// the one before.
//
// Every message is a frame: one type byte, a 4-byte big-endian payload
// length, then the payload (at most maxFrame bytes).
//
// Client to agent:
//
//	'H' header, first in each call: JSON {"action": name, "req": {...}, "log_level": "debug"}
//	'D' a chunk of the action's input stream (CallOpts.In)
//	'E' end of the input stream; empty payload
//	'C' cancel the action; empty payload
//
// After 'E' the client keeps its side open until the action ends. If the
// client's side closes (EOF) or 'C' arrives before the agent sent its final
// frame, the agent cancels the action's context.
//
// Agent to client:
//
//	'D' a chunk of the action's output stream (CallOpts.Out)
//	'P' progress: JSON host.Progress
//	'L' a log line: one hclog JSON object ("@level", "@message", then arguments)
//	'R' final: the action's JSON result (empty payload for none)
//	'X' final: the action's error text
//	'r' a part of the final frame's payload, when it is larger than a
//	    frame (a long listing of files, a long error): the parts, in
//	    order, then the final frame's own payload make the whole
//
// After a final frame the agent waits for the next request header, and
// returns when the client closes its side. A client whose call ended any
// other way (cancelled, a stream failed) closes the session.

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync"
)

const (
	frameHeader   = 'H'
	frameData     = 'D'
	frameEnd      = 'E'
	frameCancel   = 'C'
	frameProgress = 'P'
	frameLog      = 'L'
	frameResult   = 'R'
	frameError    = 'X'
	framePart     = 'r'

	// maxFrame bounds one frame's payload, and so the memory a peer can make
	// us allocate.
	maxFrame = 1 << 20
	// chunkSize is how much of a stream goes into one data frame. Frames
	// of 1 MiB rather than 256 KiB cut the per-frame work of all five
	// processes of a relayed copy (about +5% on CopySSH).
	chunkSize = 1 << 20
	// maxFinal bounds a result or an error made of parts.
	maxFinal = 256 << 20
)

// header is the payload of the 'H' frame.
type header struct {
	Action   string `json:"action"`
	Req      []byte `json:"req"`
	LogLevel string `json:"log_level,omitempty"`
}

// frameWriter writes frames; it is safe for concurrent use. A small frame
// goes out in one Write; a large one as its header, then its payload, so
// the payload is not copied.
type frameWriter struct {
	mu  sync.Mutex
	w   io.Writer
	buf []byte
}

// copyMax is the largest payload write copies to send with its header.
const copyMax = 16 << 10

func (fw *frameWriter) write(typ byte, p []byte) error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if len(p) > copyMax {
		var hdr [5]byte
		putHeader(hdr[:], typ, len(p))
		if _, err := fw.w.Write(hdr[:]); err != nil {
			return err
		}
		_, err := fw.w.Write(p)
		return err
	}
	if cap(fw.buf) < 5+len(p) {
		fw.buf = make([]byte, 5+len(p))
	}
	b := fw.buf[:5+len(p)]
	putHeader(b, typ, len(p))
	copy(b[5:], p)
	_, err := fw.w.Write(b)
	return err
}

// writeFinal sends a final frame, its payload in parts when it is larger
// than a frame.
func (fw *frameWriter) writeFinal(typ byte, p []byte) error {
	for len(p) > maxFrame {
		if err := fw.write(framePart, p[:maxFrame]); err != nil {
			return err
		}
		p = p[maxFrame:]
	}
	return fw.write(typ, p)
}

// writeFramed sends b, whose first 5 bytes are room for the header, as one
// frame in one Write.
func (fw *frameWriter) writeFramed(typ byte, b []byte) error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	putHeader(b, typ, len(b)-5)
	_, err := fw.w.Write(b)
	return err
}

func putHeader(b []byte, typ byte, n int) {
	b[0] = typ
	binary.BigEndian.PutUint32(b[1:5], uint32(n))
}

// stream returns a writer that sends what it gets as frames of type typ.
func (fw *frameWriter) stream(typ byte) io.Writer { return streamWriter{fw, typ} }

type streamWriter struct {
	fw  *frameWriter
	typ byte
}

func (s streamWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		c := min(len(p), chunkSize)
		if err := s.fw.write(s.typ, p[:c]); err != nil {
			return n, err
		}
		n += c
		p = p[c:]
	}
	return n, nil
}

// ReadFrom reads r into frames of its own buffer, behind room for the
// header, so each read goes out in one Write without another copy.
func (s streamWriter) ReadFrom(r io.Reader) (int64, error) {
	buf := make([]byte, 5+chunkSize)
	var total int64
	for {
		n, err := r.Read(buf[5:])
		if n > 0 {
			if werr := s.fw.writeFramed(s.typ, buf[:5+n]); werr != nil {
				return total, werr
			}
			total += int64(n)
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// frameReader reads frames into a reused buffer.
type frameReader struct {
	r   io.Reader
	hdr [5]byte
	buf []byte
}

// next returns the next frame. The payload is valid until the next call.
func (fr *frameReader) next() (byte, []byte, error) {
	if _, err := io.ReadFull(fr.r, fr.hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(fr.hdr[1:])
	if n > maxFrame {
		return 0, nil, fmt.Errorf("agent protocol: frame of %d bytes is too large", n)
	}
	if cap(fr.buf) < int(n) {
		fr.buf = make([]byte, n, max(int(n), chunkSize))
	}
	p := fr.buf[:n]
	if _, err := io.ReadFull(fr.r, p); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return fr.hdr[0], p, nil
}
