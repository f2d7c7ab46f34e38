package host

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Names beside a destination. A copy, archive or unarchive writes to a
// partial name and renames it into place when whole; what was at the
// destination before is moved to an aside name, kept until the run commits
// (fs.remove of the aside) or put back by the undo (fs.put-back). Every
// name carries a random suffix, so two runs never share one, and a partial
// is locked by the action writing it, so that another run clearing what
// failed attempts left (removeStale) never deletes it.
//
//	.<base>.mig-partial-<suffix>   the data being written
//	.<base>.mig-lock-<suffix>      flock held while <suffix>'s action runs
//	.<base>.mig-aside-<suffix>     what the destination held before

// partial is a locked temporary name beside a destination.
type partial struct {
	path     string
	lock     *os.File
	lockPath string
}

// newPartial returns a temporary name beside dest, in dest's directory
// (created 0700 when missing), once what failed attempts left there is
// gone, and locks it for as long as the action runs (until release).
func newPartial(dest string, c *Call) (*partial, error) {
	parent, base := filepath.Dir(dest), filepath.Base(dest)
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return nil, err
	}
	removeStale(parent, base, c)
	suffix := randomSuffix()
	// The lock is made under a name removeStale ignores, locked, then
	// renamed, so no one sees it unlocked.
	lockPath := filepath.Join(parent, "."+base+".mig-lock-"+suffix)
	f, err := os.OpenFile(lockPath+".new", os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		os.Remove(lockPath + ".new")
		return nil, err
	}
	if err := os.Rename(lockPath+".new", lockPath); err != nil {
		f.Close()
		os.Remove(lockPath + ".new")
		return nil, err
	}
	return &partial{path: filepath.Join(parent, "."+base+".mig-partial-"+suffix), lock: f, lockPath: lockPath}, nil
}

// release removes the partial data, if still there, and the lock.
func (p *partial) release() {
	os.RemoveAll(p.path)
	os.Remove(p.lockPath)
	p.lock.Close()
}

// removeStale removes the partial data that failed attempts left next to
// dest: those whose lock no live action holds.
func removeStale(parent, base string, c *Call) {
	prefix := filepath.Join(parent, "."+escapeGlob(base)+".mig-partial-")
	matches, _ := filepath.Glob(prefix + "*")
	for _, m := range matches {
		suffix := strings.TrimPrefix(m, filepath.Join(parent, "."+base+".mig-partial-"))
		lockPath := filepath.Join(parent, "."+base+".mig-lock-"+suffix)
		if f, err := os.Open(lockPath); err == nil {
			busy := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil
			f.Close()
			if busy {
				c.Log.Debug("leaving a partial file another action is writing", "path", m)
				continue
			}
		}
		c.Log.Info("removing leftover of an earlier attempt", "path", m)
		os.RemoveAll(m)
		os.Remove(lockPath)
	}
}

// asidePath is a new aside name for dest.
func asidePath(dest string) string {
	return filepath.Join(filepath.Dir(dest), "."+filepath.Base(dest)+".mig-aside-"+randomSuffix())
}

// Placed says what putting new content at a destination displaced, so
// that fs.put-back can undo it. It is the request of fs.put-back.
type Placed struct {
	Path string `json:"path"`
	// Aside holds what was at Path before (the whole of it, or with
	// Merged, the entries the merge replaced); "" when nothing was.
	Aside string `json:"aside,omitempty"`
	// Merged says the new content was merged into a directory that was
	// there; Added lists the entries the merge added, relative to Path.
	Merged bool     `json:"merged,omitempty"`
	Added  []string `json:"added,omitempty"`
}

// place renames tmp to dest. What was at dest is moved aside: kept at
// the returned Placed.Aside when keep is set, removed otherwise. With sync,
// the parent directory is synced.
func place(tmp, dest string, keep, sync bool) (Placed, error) {
	pl := Placed{Path: dest}
	if _, err := os.Lstat(dest); err == nil {
		pl.Aside = asidePath(dest)
		if err := os.Rename(dest, pl.Aside); err != nil {
			return Placed{}, err
		}
	}
	if err := os.Rename(tmp, dest); err != nil {
		if pl.Aside != "" {
			os.Rename(pl.Aside, dest)
		}
		return Placed{}, err
	}
	if pl.Aside != "" && !keep {
		os.RemoveAll(pl.Aside)
		pl.Aside = ""
	}
	if !sync {
		return pl, nil
	}
	return pl, syncDir(filepath.Dir(dest))
}

// mergeInto moves the entries of the directory tmp into dest, creating dest
// when missing. Entries of the same name are replaced: the old ones are
// moved into the aside directory, kept when keep is set. tmp is removed.
func mergeInto(tmp, dest string, keep, sync bool) (Placed, error) {
	if _, err := os.Lstat(dest); errors.Is(err, fs.ErrNotExist) {
		return place(tmp, dest, keep, sync)
	}
	pl := Placed{Path: dest, Merged: true, Aside: asidePath(dest)}
	err := mergeDir(tmp, dest, "", &pl)
	if err == nil {
		err = os.Remove(tmp)
	}
	if err == nil && sync {
		err = syncDir(dest)
	}
	if _, serr := os.Lstat(pl.Aside); serr != nil {
		pl.Aside = "" // nothing was replaced
	} else if !keep {
		os.RemoveAll(pl.Aside)
		pl.Aside = ""
	}
	return pl, err
}

func mergeDir(from, to, rel string, pl *Placed) error {
	ents, err := os.ReadDir(from)
	if err != nil {
		return err
	}
	for _, e := range ents {
		name := filepath.Join(rel, e.Name())
		src, dst := filepath.Join(from, e.Name()), filepath.Join(to, e.Name())
		fi, err := os.Lstat(dst)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			pl.Added = append(pl.Added, name)
		case err != nil:
			return err
		case fi.IsDir() && e.IsDir():
			if err := mergeDir(src, dst, name, pl); err != nil {
				return err
			}
			if err := os.Remove(src); err != nil {
				return err
			}
			continue
		default:
			old := filepath.Join(pl.Aside, name)
			if err := os.MkdirAll(filepath.Dir(old), 0o700); err != nil {
				return err
			}
			if err := os.Rename(dst, old); err != nil {
				return err
			}
		}
		if err := os.Rename(src, dst); err != nil {
			return err
		}
	}
	return nil
}

// putBack is the "fs.put-back" action, the undo of a copy, archive or
// unarchive: it removes what they placed at Path and puts back what was
// there. It is idempotent: once the aside is gone, there is nothing left
// to put back.
func putBack(ctx context.Context, c *Call, pl Placed) (None, error) {
	p, err := cleanPath(pl.Path)
	if err != nil {
		return None{}, err
	}
	if pl.Aside != "" {
		if pl.Aside, err = cleanPath(pl.Aside); err != nil {
			return None{}, err
		}
		if filepath.Dir(pl.Aside) != filepath.Dir(p) {
			return None{}, fmt.Errorf("aside %s is not beside %s", pl.Aside, p)
		}
	}
	_, aerr := os.Lstat(pl.Aside)
	asideThere := pl.Aside != "" && aerr == nil
	if !pl.Merged {
		if pl.Aside != "" && !asideThere {
			c.Log.Debug("already put back", "path", p)
			return None{}, nil
		}
		if err := os.RemoveAll(p); err != nil {
			return None{}, err
		}
		if asideThere {
			if err := os.Rename(pl.Aside, p); err != nil {
				return None{}, err
			}
		}
		return None{}, syncDir(filepath.Dir(p))
	}
	for _, rel := range pl.Added {
		q, err := within(p, rel)
		if err != nil {
			return None{}, err
		}
		if err := os.RemoveAll(q); err != nil {
			return None{}, err
		}
	}
	if asideThere {
		err := filepath.WalkDir(pl.Aside, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, _ := filepath.Rel(pl.Aside, path)
			q := filepath.Join(p, rel)
			if err := os.MkdirAll(filepath.Dir(q), 0o700); err != nil {
				return err
			}
			os.RemoveAll(q)
			return os.Rename(path, q)
		})
		if err != nil {
			return None{}, err
		}
		if err := os.RemoveAll(pl.Aside); err != nil {
			return None{}, err
		}
	}
	return None{}, syncDir(p)
}

// within joins rel to dir, refusing anything that leaves dir.
func within(dir, rel string) (string, error) {
	q := filepath.Join(dir, rel)
	if rel == "" || filepath.IsAbs(rel) || !strings.HasPrefix(q, dir+string(filepath.Separator)) {
		return "", fmt.Errorf("entry %q is not inside %s", rel, dir)
	}
	return q, nil
}
