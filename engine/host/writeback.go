package host

import (
	"os"

	"golang.org/x/sys/unix"
)

// writebackStep is how much a writebackFile writes before it asks the
// kernel to start writing that part to disk.
const writebackStep = 8 << 20

// writebackFile writes to a file and starts the disk writes of what it
// wrote as it goes, so the fsync at the end has little left to wait for
// instead of the whole file. It does not replace that fsync.
type writebackFile struct {
	f       *os.File
	off     int64 // bytes written
	flushed int64 // writeback started up to here
}

func (w *writebackFile) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.off += int64(n)
	if w.off-w.flushed >= writebackStep {
		// Only a hint: an error here shows up again at the fsync.
		unix.SyncFileRange(int(w.f.Fd()), w.flushed, w.off-w.flushed, unix.SYNC_FILE_RANGE_WRITE)
		w.flushed = w.off
	}
	return n, err
}
