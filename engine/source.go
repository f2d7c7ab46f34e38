package engine

import (
	"os"
	"path/filepath"
)

// SourceDir is where a run keeps a copy of its workflow's files, so that
// its report can show the source that ran.
func SourceDir(runDir string) string { return filepath.Join(runDir, "source") }

// saveSources copies the workflow's files into the run directory, each
// under its base name. A file that cannot be copied is left out: the
// record still has its sha256.
func saveSources(runDir string, names []string) {
	dir := SourceDir(runDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return
	}
	for _, n := range names {
		if data, err := os.ReadFile(n); err == nil {
			os.WriteFile(filepath.Join(dir, filepath.Base(n)), data, 0o600)
		}
	}
}
