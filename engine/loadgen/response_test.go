package loadgen

import (
	"bufio"
	"io"
	"net/http"
	"strings"
	"testing"
)

// readResponse reads what net/http reads: the same status, the same
// end of the connection, and not a byte more.
func TestReadResponse(t *testing.T) {
	long := strings.Repeat("x", 10000)
	for name, raw := range map[string]string{
		"length":      "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
		"close":       "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nab",
		"chunked":     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nTrailer: 1\r\n\r\n",
		"no body":     "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
		"not changed": "HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n",
		"interim":     "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 1\r\n\r\nz",
		"1.0":         "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nz",
		"1.0 kept":    "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\nz",
		"long header": "HTTP/1.1 500 Oops\r\nX-Long: " + long + "\r\nContent-Length: 4\r\n\r\nfail",
		"bare LF":     "HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
	} {
		t.Run(name, func(t *testing.T) {
			// As net/http's client does, skip interim responses.
			wbr := bufio.NewReader(strings.NewReader(raw + "NEXT"))
			want, err := http.ReadResponse(wbr, nil)
			for err == nil && want.StatusCode < 200 {
				want, err = http.ReadResponse(wbr, nil)
			}
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, want.Body)
			br := bufio.NewReaderSize(strings.NewReader(raw+"NEXT"), 4096)
			status, closeAfter, err := readResponse(br)
			if err != nil {
				t.Fatal(err)
			}
			if status != want.StatusCode || closeAfter != want.Close {
				t.Errorf("status %d close %v, net/http: %d %v", status, closeAfter, want.StatusCode, want.Close)
			}
			if rest, _ := io.ReadAll(br); string(rest) != "NEXT" {
				t.Errorf("left %q after the response", rest)
			}
		})
	}
	// A body that runs until the server closes.
	status, closeAfter, err := readResponse(bufio.NewReader(strings.NewReader("HTTP/1.1 200 OK\r\n\r\nall of it")))
	if status != 200 || !closeAfter || err != nil {
		t.Errorf("close-delimited body: %d %v %v", status, closeAfter, err)
	}
	for _, bad := range []string{"", "HTTP/1.1 2x0 OK\r\n\r\n", "SSH-2.0-OpenSSH\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab"} {
		if _, _, err := readResponse(bufio.NewReader(strings.NewReader(bad))); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
