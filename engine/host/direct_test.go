package host

import (
	"bufio"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A sender refuses a receiver whose certificate is not the ticket's.
func TestDirectFingerprint(t *testing.T) {
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "f"), []byte("payload"), 0o600))
	h := NewLocal("dst", Table(Builtin()), testLog(t))
	src := NewLocal("src", Table(Builtin()), testLog(t))
	tr, tw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		ActRecv.Call(ctx, h, RecvRequest{Path: filepath.Join(dir, "out"), Listen: "127.0.0.1:0"}, nil, CallOpts{Out: tw})
		tw.Close()
	}()
	tk, err := readTicket(bufio.NewReader(tr))
	must(t, err)
	go io.Copy(io.Discard, tr)
	req := SendRequest{Path: filepath.Join(dir, "f"), Connect: "127.0.0.1:" + tk.Port, Fingerprint: strings.Repeat("0", 64), Token: tk.Token}
	if serr := ActSend.Call(ctx, src, req, nil, CallOpts{}); serr == nil || !strings.Contains(serr.Error(), "does not match its ticket") {
		t.Fatalf("source error %v, want a fingerprint mismatch", serr)
	}
	if _, err := os.Stat(filepath.Join(dir, "out")); err == nil {
		t.Fatal("an unauthenticated transfer landed")
	}
}

// Strangers who connect to a direct receiver first, one with a wrong
// token, one that says nothing and one from an address that is not the
// source's, are refused, and the source's copy still lands.
func TestDirectStrangersFirst(t *testing.T) {
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "f"), []byte("payload"), 0o600))
	h := NewLocal("dst", Table(Builtin()), testLog(t))
	src := NewLocal("src", Table(Builtin()), testLog(t))
	tr, tw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dstErr := make(chan error, 1)
	var got TransferResult
	go func() {
		// Only 127.0.0.1 is the source; 127.0.0.2 is a stranger.
		dstErr <- ActRecv.Call(ctx, h, RecvRequest{Path: filepath.Join(dir, "out"), Listen: "127.0.0.1:0", From: []string{"127.0.0.1"}}, &got, CallOpts{Out: tw})
		tw.Close()
	}()
	tk, err := readTicket(bufio.NewReader(tr))
	must(t, err)
	go io.Copy(io.Discard, tr)
	addr := "127.0.0.1:" + tk.Port

	silent, err := net.Dial("tcp", addr)
	must(t, err)
	defer silent.Close()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	if c, err := d.Dial("tcp", addr); err == nil {
		buf := make([]byte, 1)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(buf); err == nil {
			t.Error("a connection from a stranger's address was served")
		}
		c.Close()
	}
	bad := SendRequest{Path: filepath.Join(dir, "f"), Connect: addr, Fingerprint: tk.Fingerprint, Token: strings.Repeat("0", len(tk.Token))}
	ActSend.Call(ctx, src, bad, nil, CallOpts{})

	good := SendRequest{Path: filepath.Join(dir, "f"), Connect: addr, Fingerprint: tk.Fingerprint, Token: tk.Token}
	if err := ActSend.Call(ctx, src, good, nil, CallOpts{}); err != nil {
		t.Fatalf("the source's send: %v", err)
	}
	if err := <-dstErr; err != nil {
		t.Fatalf("the receiver: %v", err)
	}
	if data, err := os.ReadFile(filepath.Join(dir, "out")); err != nil || string(data) != "payload" {
		t.Fatalf("the copy did not land: %q %v", data, err)
	}
}
