package criu

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/nftables"
)

// inventory builds an inventory image: img_version 2, the network-lock
// method (when lock >= 0) and the dump's run id, as CRIU writes them.
func inventory(lock int) []byte {
	var e []byte
	e = binary.AppendUvarint(e, 1<<3)
	e = binary.AppendUvarint(e, 2)
	if lock >= 0 {
		e = binary.AppendUvarint(e, inventoryLockField<<3)
		e = binary.AppendUvarint(e, uint64(lock))
	}
	id := "8f16d64d-f255-482a-9aa0-5d6ff24b2a0a"
	e = binary.AppendUvarint(e, 13<<3|2)
	e = binary.AppendUvarint(e, uint64(len(id)))
	e = append(e, id...)
	b := binary.LittleEndian.AppendUint32(nil, inventoryMagic)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(e)))
	return append(b, e...)
}

func TestSkipUnlock(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      []byte
		changed bool
		want    []byte
		err     bool
	}{
		{name: "nftables", in: inventory(lockNftables), changed: true, want: inventory(lockSkip)},
		{name: "iptables", in: inventory(0), want: inventory(0)},
		{name: "skip already", in: inventory(lockSkip), want: inventory(lockSkip)},
		{name: "no method", in: inventory(-1), want: inventory(-1)},
		{name: "not an inventory", in: []byte("garbage!garbage"), want: []byte("garbage!garbage"), err: true},
		{name: "truncated", in: inventory(lockNftables)[:20], want: inventory(lockNftables)[:20], err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "inventory.img")
			if err := os.WriteFile(path, tc.in, 0o600); err != nil {
				t.Fatal(err)
			}
			changed, err := skipUnlock(dir)
			if (err != nil) != tc.err || changed != tc.changed {
				t.Fatalf("skipUnlock = %v, %v; want changed %v, error %v", changed, err, tc.changed, tc.err)
			}
			got, _ := os.ReadFile(path)
			if !bytes.Equal(got, tc.want) {
				t.Errorf("inventory is now %x, want %x", got, tc.want)
			}
			if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
				t.Errorf("mode %v, want 0600", fi.Mode().Perm())
			}
		})
	}
}

// TestSkipNoopUnlock keeps the unlock where a namespace CRIU would unlock
// in holds a CRIU table, and skips it once none does.
func TestSkipNoopUnlock(t *testing.T) {
	n := newTestNetns(t)
	path := fmt.Sprintf("/proc/self/fd/%d", int(n.h))
	c, err := nftables.New(nftables.WithNetNSFd(int(n.h)))
	if err != nil {
		t.Fatal(err)
	}
	c.AddTable(&nftables.Table{Name: "CRIU-8f16d64d-f255-482a-9a", Family: nftables.TableFamilyINet})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "inventory.img"), inventory(lockNftables), 0o600); err != nil {
		t.Fatal(err)
	}
	SkipNoopUnlock(dir, path)
	if got, _ := os.ReadFile(filepath.Join(dir, "inventory.img")); !bytes.Equal(got, inventory(lockNftables)) {
		t.Fatalf("the unlock was skipped with a CRIU table in %s", path)
	}
	ns, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if err := DeleteNftTable(ns, "inet CRIU-8f16d64d-f255-482a-9a"); err != nil {
		t.Fatal(err)
	}
	SkipNoopUnlock(dir, path)
	if got, _ := os.ReadFile(filepath.Join(dir, "inventory.img")); !bytes.Equal(got, inventory(lockSkip)) {
		t.Fatalf("the unlock was kept with no CRIU table left")
	}
}
