package criu

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
)

// A restore ends by deleting its dump's network lock (an nftables table),
// and deleting a table, even one that is not there, waits for an RCU grace
// period: 10–20 ms here, inside the pause. On a target the lock is never
// there: it stayed on the source. CRIU takes the restore's network-lock
// method from the dump's inventory image and ignores the request's, so a
// restore where no lock exists has the inventory say "skip".

const inventoryMagic = 0x58313116

// Network-lock methods as CRIU records them (field 11 of the inventory).
const (
	inventoryLockField = 11
	lockNftables       = 1
	lockSkip           = 2
)

// SkipNoopUnlock has the restore from dir skip CRIU's network unlock when
// it could do nothing: when none of the network namespaces where CRIU
// would delete the lock (this one, and the paths in netns) holds a CRIU
// table. Best effort: an inventory it cannot change is restored as is.
func SkipNoopUnlock(dir string, netns ...string) {
	if hasLockTable(nil) {
		return
	}
	for _, p := range netns {
		f, err := os.Open(p)
		if err != nil {
			return
		}
		locked := hasLockTable(f)
		f.Close()
		if locked {
			return
		}
	}
	skipUnlock(dir)
}

// skipUnlock rewrites the inventory image in dir so that its restore skips
// the network unlock. It changes only an nftables lock, and reports
// whether it did.
func skipUnlock(dir string) (bool, error) {
	path := filepath.Join(dir, "inventory.img")
	b, err := os.ReadFile(path)
	if err != nil {
		return false, err
	}
	if len(b) < 8 || binary.LittleEndian.Uint32(b) != inventoryMagic || int(binary.LittleEndian.Uint32(b[4:])) != len(b)-8 {
		return false, errors.New("inventory.img: not a CRIU inventory image")
	}
	out := make([]byte, 8, len(b))
	copy(out, b[:4])
	changed := false
	for entry := b[8:]; len(entry) > 0; {
		f, err := nextField(entry)
		if err != nil {
			return false, err
		}
		field := entry[:f.size]
		if f.num == inventoryLockField && f.wire == 0 {
			if f.value != lockNftables {
				return false, nil
			}
			field = binary.AppendUvarint(binary.AppendUvarint(nil, inventoryLockField<<3), lockSkip)
			changed = true
		}
		out = append(out, field...)
		entry = entry[f.size:]
	}
	if !changed {
		return false, nil
	}
	binary.LittleEndian.PutUint32(out[4:], uint32(len(out)-8))
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, out, 0o600); err != nil {
		return false, err
	}
	return true, os.Rename(tmp, path)
}
