package loadgen

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// readResponse reads one HTTP/1.x response from br and discards its body.
// It returns the status and whether the connection ends with it. It reads
// what net/http's ReadResponse would, without building headers a load
// never looks at: at thousands of requests a second those allocations
// were a tenth of the load's CPU.
func readResponse(br *bufio.Reader) (status int, closeAfter bool, err error) {
	for {
		line, err := readLine(br)
		if err != nil {
			return 0, true, err
		}
		// "HTTP/1.1 200 OK"
		if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
			return 0, true, fmt.Errorf("malformed HTTP status line %q", line)
		}
		status = digits3(line[9:12])
		if status < 0 {
			return 0, true, fmt.Errorf("malformed HTTP status code %q", line[9:12])
		}
		closeAfter = line[7] == '0' // HTTP/1.0 closes unless kept alive
		length, chunked := int64(-1), false
		for {
			h, err := readLine(br)
			if err != nil {
				return 0, true, err
			}
			if len(h) == 0 {
				break
			}
			colon := bytes.IndexByte(h, ':')
			if colon < 0 {
				return 0, true, fmt.Errorf("malformed HTTP header %q", h)
			}
			name, value := h[:colon], bytes.TrimSpace(h[colon+1:])
			switch {
			case equalFold(name, "content-length"):
				if length, err = strconv.ParseInt(string(value), 10, 64); err != nil || length < 0 {
					return 0, true, fmt.Errorf("bad Content-Length %q", value)
				}
			case equalFold(name, "transfer-encoding"):
				chunked = hasToken(value, "chunked")
			case equalFold(name, "connection"):
				if hasToken(value, "close") {
					closeAfter = true
				} else if hasToken(value, "keep-alive") {
					closeAfter = false
				}
			}
		}
		if status >= 100 && status < 200 && status != 101 {
			continue // an interim response: the real one follows
		}
		switch {
		case status < 200 || status == 204 || status == 304:
		case chunked:
			err = discardChunked(br)
		case length >= 0:
			err = discard(br, length)
		default:
			// The body runs until the server closes.
			_, err = io.Copy(io.Discard, br)
			closeAfter = true
		}
		return status, closeAfter, err
	}
}

// readLine reads a line without its CR LF; a line longer than br's buffer
// is gathered piece by piece.
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		long := append([]byte(nil), line...)
		for errors.Is(err, bufio.ErrBufferFull) {
			if len(long) > 1<<20 {
				return nil, errors.New("HTTP line longer than 1 MiB")
			}
			line, err = br.ReadSlice('\n')
			long = append(long, line...)
		}
		line = long
	}
	if err != nil {
		if err == io.EOF && len(line) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return bytes.TrimRight(line, "\r\n"), nil
}

// discardChunked discards a chunked body and its trailers.
func discardChunked(br *bufio.Reader) error {
	for {
		line, err := readLine(br)
		if err != nil {
			return err
		}
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i]
		}
		size, err := strconv.ParseInt(string(bytes.TrimSpace(line)), 16, 64)
		if err != nil || size < 0 {
			return fmt.Errorf("bad chunk size %q", line)
		}
		if size == 0 {
			for {
				t, err := readLine(br)
				if err != nil || len(t) == 0 {
					return err
				}
			}
		}
		if err := discard(br, size+2); err != nil { // the chunk and its CR LF
			return err
		}
	}
}

func discard(br *bufio.Reader, n int64) error {
	for n > 0 {
		step := int(min(n, 1<<30))
		d, err := br.Discard(step)
		n -= int64(d)
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

func digits3(b []byte) int {
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// equalFold compares an ASCII header name with a lower-case one.
func equalFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// hasToken says whether a comma-separated header value lists token.
func hasToken(value []byte, token string) bool {
	for _, t := range bytes.Split(value, []byte(",")) {
		if equalFold(bytes.TrimSpace(t), token) {
			return true
		}
	}
	return false
}
