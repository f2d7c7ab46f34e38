package criu

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/mig-project/mig/engine/host"
)

// ActClean removes a checkpoint's images from a dir once the run has
// committed: pages-*.img holds the process's memory, the whole of it
// after a disk or page-server dump, and nothing reads them any more. The
// logs and stats stay, for a look afterwards.
var ActClean = host.Action[CleanRequest, host.None]{Name: "criu.clean"}

// CleanRequest names the images dir to clean.
type CleanRequest struct {
	Dir string `json:"dir"`
}

func clean(ctx context.Context, c *host.Call, req CleanRequest) (host.None, error) {
	return host.None{}, RemoveImages(req.Dir)
}

// RemoveImages removes the regular *.img files in dir (not below it), and
// is done when there are none.
func RemoveImages(dir string) error {
	files, err := filepath.Glob(filepath.Join(dir, "*.img"))
	if err != nil {
		return err
	}
	var errs []error
	for _, f := range files {
		if fi, err := os.Lstat(f); err != nil || !fi.Mode().IsRegular() {
			continue
		}
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
