package host

// The agent protocol, spoken between mig (the client) and `mig agent` on a
// remote host over the stdin and stdout of one SSH session. One session runs
// one action.
//
// Every message is a frame: one type byte, a 4-byte big-endian payload
// length, then the payload (at most maxFrame bytes).
//
// Client to agent:
//
//	'H' header, first and once: JSON {"action": name, "req": {...}, "log_level": "debug"}
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
//
// After a final frame the agent returns and the client closes the session.

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

	// maxFrame bounds one frame's payload, and so the memory a peer can make
	// us allocate.
	maxFrame = 1 << 20
	// chunkSize is how much of a stream goes into one data frame.
	chunkSize = 256 << 10
)

// header is the payload of the 'H' frame.
type header struct {
	Action   string `json:"action"`
	Req      []byte `json:"req"`
	LogLevel string `json:"log_level,omitempty"`
}

// frameWriter writes frames, each with one Write; it is safe for
// concurrent use.
type frameWriter struct {
	mu  sync.Mutex
	w   io.Writer
	buf []byte
}

func (fw *frameWriter) write(typ byte, p []byte) error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if cap(fw.buf) < 5+len(p) {
		fw.buf = make([]byte, 5+len(p))
	}
	b := fw.buf[:5+len(p)]
	b[0] = typ
	binary.BigEndian.PutUint32(b[1:5], uint32(len(p)))
	copy(b[5:], p)
	_, err := fw.w.Write(b)
	return err
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
