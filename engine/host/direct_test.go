package host

import (
	"bufio"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A direct receiver refuses a sender without its token, and a sender
// refuses a receiver whose certificate is not the ticket's.
func TestDirectAuth(t *testing.T) {
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "f"), []byte("payload"), 0o600))
	h := NewLocal("dst", Builtin(), testLog(t))
	src := NewLocal("src", Builtin(), testLog(t))
	for _, c := range []struct{ name, wantSrc, wantDst string }{
		{"token", "", "sent a wrong token"},
		{"fingerprint", "does not match its ticket", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			tr, tw := io.Pipe()
			dstErr := make(chan error, 1)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() {
				dstErr <- h.Call(ctx, "fs.recv", RecvRequest{Path: filepath.Join(dir, "out-"+c.name), Listen: "127.0.0.1:0"}, nil, CallOpts{Out: tw})
				tw.Close()
			}()
			tk, err := readTicket(bufio.NewReader(tr))
			must(t, err)
			go io.Copy(io.Discard, tr)
			req := SendRequest{Path: filepath.Join(dir, "f"), Connect: "127.0.0.1:" + tk.Port, Fingerprint: tk.Fingerprint, Token: tk.Token}
			if c.name == "token" {
				req.Token = strings.Repeat("0", len(tk.Token))
			} else {
				req.Fingerprint = strings.Repeat("0", 64)
			}
			serr := src.Call(ctx, "fs.send", req, nil, CallOpts{})
			if c.wantSrc != "" && (serr == nil || !strings.Contains(serr.Error(), c.wantSrc)) {
				t.Fatalf("source error %v, want %q", serr, c.wantSrc)
			}
			if c.wantDst != "" {
				if derr := <-dstErr; derr == nil || !strings.Contains(derr.Error(), c.wantDst) {
					t.Fatalf("destination error %v, want %q", derr, c.wantDst)
				}
			}
			if _, err := os.Stat(filepath.Join(dir, "out-"+c.name)); err == nil {
				t.Fatal("an unauthenticated transfer landed")
			}
		})
	}
}
