package criu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// CRIU's pagemap flags.
const (
	pageInParent = 1 << 0
	pageLazy     = 1 << 1
	pagePresent  = 1 << 2
)

// PageCounts sums the pagemap images in dir: pages whose content is in
// the images (present), left on the source for post-copy (lazy) and taken
// from a parent dump (parent). A lazy dump's stats-dump is not reliable
// (CRIU's page server resets the counters), so these stand in for it.
func PageCounts(dir string) (present, lazy, parent int64, err error) {
	files, err := filepath.Glob(filepath.Join(dir, "pagemap-*.img"))
	if err != nil || len(files) == 0 {
		return 0, 0, 0, errors.New("no pagemap images")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return 0, 0, 0, err
		}
		if err := sumPagemap(b, &present, &lazy, &parent); err != nil {
			return 0, 0, 0, err
		}
	}
	return present, lazy, parent, nil
}

// sumPagemap walks one pagemap image: a head, then one PagemapEntry per
// range.
func sumPagemap(b []byte, present, lazy, parent *int64) error {
	entries, err := imageEntries(b)
	if err != nil {
		return fmt.Errorf("pagemap image: %w", err)
	}
	for i, entry := range entries {
		if i == 0 {
			continue // the head names the pages image
		}
		fields, err := varintFields(entry)
		if err != nil {
			return err
		}
		pages := int64(fields[2])
		if v, ok := fields[5]; ok {
			pages = int64(v)
		}
		flags := fields[4]
		if fields[3] != 0 {
			flags |= pageInParent
		}
		switch {
		case flags&pageLazy != 0:
			*lazy += pages
		case flags&pageInParent != 0:
			*parent += pages
		default:
			*present += pages
		}
	}
	return nil
}

// varintFields decodes the varint fields of a protobuf message by number;
// other wire types are skipped.
func varintFields(b []byte) (map[int]uint64, error) {
	out := map[int]uint64{}
	for len(b) > 0 {
		f, err := nextField(b)
		if err != nil {
			return nil, err
		}
		if f.wire == 0 {
			out[f.num] = f.value
		}
		b = b[f.size:]
	}
	return out, nil
}

// imageEntries splits a CRIU image into its protobuf entries: after its
// magic (two words, where the first is CRIU's common or service magic),
// each entry is a 32-bit length and that many bytes.
func imageEntries(b []byte) ([][]byte, error) {
	const imgCommon, imgService = 0x54564319, 0x55105940
	if len(b) < 4 {
		return nil, errors.New("short image")
	}
	m := binary.LittleEndian.Uint32(b)
	b = b[4:]
	if m == imgCommon || m == imgService {
		if len(b) < 4 {
			return nil, errors.New("short image")
		}
		b = b[4:]
	}
	var out [][]byte
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, errors.New("truncated entry")
		}
		n := int(binary.LittleEndian.Uint32(b))
		b = b[4:]
		if n > len(b) {
			return nil, errors.New("truncated entry")
		}
		out = append(out, b[:n])
		b = b[n:]
	}
	return out, nil
}

// protoField is one field at the start of a protobuf message: its number,
// wire type, value (varints only) and size in bytes, tag included.
type protoField struct {
	num   int
	wire  uint64
	value uint64
	data  []byte // a length-delimited field's bytes
	size  int
}

func nextField(b []byte) (protoField, error) {
	tag, n := binary.Uvarint(b)
	if n <= 0 {
		return protoField{}, errors.New("bad protobuf tag")
	}
	f := protoField{num: int(tag >> 3), wire: tag & 7}
	rest := b[n:]
	switch f.wire {
	case 0:
		v, m := binary.Uvarint(rest)
		if m <= 0 {
			return f, errors.New("bad protobuf varint")
		}
		f.value, n = v, n+m
	case 1:
		if len(rest) < 8 {
			return f, errors.New("bad protobuf fixed64")
		}
		n += 8
	case 5:
		if len(rest) < 4 {
			return f, errors.New("bad protobuf fixed32")
		}
		n += 4
	case 2:
		l, m := binary.Uvarint(rest)
		if m <= 0 || uint64(len(rest)-m) < l {
			return f, errors.New("bad protobuf length")
		}
		f.data = rest[m : m+int(l)]
		n += m + int(l)
	default:
		return f, errors.New("unsupported protobuf wire type")
	}
	f.size = n
	return f, nil
}
