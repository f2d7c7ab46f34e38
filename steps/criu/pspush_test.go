package criu

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
)

// TestPageServerDumpNoStall: a dump through a page server gets the page
// server's last answer at once. CRIU sends its last message in a corked
// socket, which the kernel would hold 200 ms, in the freeze, without
// PushPageServer.
func TestPageServerDumpNoStall(t *testing.T) {
	b := needCRIU(t)
	c := startCounter(t, testPortBase+96, 16, true)
	dir := t.TempDir()
	_, port, err := b.PageServer(context.Background(), filepath.Join(dir, "pages"), "", Addr{Host: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	images := filepath.Join(dir, "images")
	if err := os.MkdirAll(images, 0o700); err != nil {
		t.Fatal(err)
	}
	opts := Opts(images, DumpLog, Options{})
	opts.Pid = ptr(int32(c.cmd.Process.Pid))
	opts.LeaveRunning = ptr(true)
	opts.Ps = &rpc.CriuPageServerInfo{Address: ptr("127.0.0.1"), Port: ptr(int32(port))}
	if err := b.Run(context.Background(), rpc.CriuReqType_DUMP, opts, nil); err != nil {
		t.Fatal(err)
	}
	log, err := os.ReadFile(filepath.Join(images, DumpLog))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`\((\d+\.\d+)\) page-xfer: Disconnect from the page server[^\n]*\n(?:[^\n]*\n)*?\((\d+\.\d+)\) `).FindSubmatch(log)
	if m == nil {
		t.Fatalf("no page server disconnect in the dump log:\n%s", log)
	}
	from, _ := strconv.ParseFloat(string(m[1]), 64)
	to, _ := strconv.ParseFloat(string(m[2]), 64)
	t.Logf("the page server answered %.1f ms after the dump's last message", (to-from)*1000)
	if to-from > 0.1 {
		t.Errorf("the page server's answer took %.0f ms: the dump's last message waited in the corked socket", (to-from)*1000)
	}
	if _, err := c.get("/"); err != nil {
		t.Errorf("the counter does not answer after a dump that left it running: %v", err)
	}
}
