package steps

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"

	"github.com/mig-project/mig/steps/criu"
)

// brought maps the paths that steps put on a host (the destinations of
// copies to it and of archives extracted there) to those steps.
type brought map[string][]Planned

// broughtPaths is what the steps that pick says count put on hostName.
func broughtPaths(env Env, hostName string, pick func(Planned) bool) brought {
	if hostName == "" {
		return nil
	}
	out := brought{}
	for _, p := range env.Steps {
		var to string
		switch p.Kind {
		case "copy":
			to = Copy{}.Host(p.Cfg)
		case "unarchive":
			to = Unarchive{}.Host(p.Cfg)
		default:
			continue
		}
		if d := String(p.Cfg, "destination", ""); to == hostName && filepath.IsAbs(d) && pick(p) {
			d = filepath.Clean(d)
			out[d] = append(out[d], p)
		}
	}
	return out
}

// broughtBefore is broughtPaths for the steps that this one runs after:
// what a restore will find on its host.
func broughtBefore(env Env, hostName string) brought {
	if env.Self == nil {
		return nil
	}
	return broughtPaths(env, hostName, func(p Planned) bool { return env.Self.After(p.Name) })
}

// broughtAfter is broughtPaths for the steps that run after this one and
// before a restore on hostName: what a dump's target lacks now but the
// restore will find.
func broughtAfter(env Env, hostName string) brought {
	if env.Self == nil {
		return nil
	}
	return broughtPaths(env, hostName, func(p Planned) bool {
		if !p.After(env.Self.Name) {
			return false
		}
		for _, r := range env.Steps {
			if r.Kind == "restore" && hostArg(r.Cfg) == hostName && r.After(p.Name) {
				return true
			}
		}
		return false
	})
}

// by returns the steps that bring path: it, or a directory above it.
func (b brought) by(path string) []Planned {
	var out []Planned
	for p := filepath.Clean(path); ; p = filepath.Dir(p) {
		out = append(out, b[p]...)
		if p == "/" || p == "." {
			return out
		}
	}
}

// withoutBrought leaves out of n the files, socket directories and locks
// that b brings, and says which steps bring how many: the host lacks them
// now, but will have them, new, when the restore runs.
func withoutBrought(n criu.Needs, b brought) (criu.Needs, []string) {
	if len(b) == 0 {
		return n, nil
	}
	count := map[string]int{}
	keep := func(path string) bool {
		steps := b.by(path)
		if len(steps) == 0 {
			return true
		}
		var names []string
		for _, p := range steps {
			if n := "step." + p.Name; !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
		count[strings.Join(names, " and ")]++
		return false
	}
	out := criu.Needs{Written: n.Written, Sizes: n.Sizes, Modes: n.Modes, Holders: n.Holders}
	for _, d := range n.Dirs {
		if keep(d) {
			out.Dirs = append(out.Dirs, d)
		}
	}
	for _, f := range n.Files {
		if keep(f) {
			out.Files = append(out.Files, f)
		}
	}
	for _, l := range n.Locks {
		if len(b.by(l.Path)) == 0 {
			out.Locks = append(out.Locks, l)
		}
	}
	var notes []string
	for _, by := range slices.Sorted(maps.Keys(count)) {
		what := "path"
		if count[by] > 1 {
			what = "paths"
		}
		runs := "runs"
		if strings.Contains(by, " and ") {
			runs = "run"
		}
		notes = append(notes, fmt.Sprintf("%d %s the restore needs come with %s, which %s before it", count[by], what, by, runs))
	}
	return out, notes
}

// tornCopies finds the files the workload may change that only copies
// before its freeze bring (none of them runs after a dump of w): the
// target would restore it on files that changed after they were copied,
// or mid-copy. The problem says which dump to run the copy after.
func tornCopies(env Env, w workload, written []string, b brought) []string {
	var dumps []string
	for _, p := range env.Steps {
		wv := Attr(p.Cfg, "workload")
		if p.Kind == "dump" && String(wv, "kind", "") == w.Kind && String(wv, "name", "") == w.Name {
			dumps = append(dumps, p.Name)
		}
	}
	if len(dumps) == 0 {
		return nil
	}
	afterFreeze := func(p Planned) bool {
		return slices.ContainsFunc(dumps, p.After)
	}
	torn := map[string][]string{}
	for _, f := range written {
		steps := b.by(f)
		if len(steps) > 0 && !slices.ContainsFunc(steps, afterFreeze) {
			by := "step." + steps[0].Name
			torn[by] = append(torn[by], f)
		}
	}
	var out []string
	for _, by := range slices.Sorted(maps.Keys(torn)) {
		files := torn[by]
		shown := files[0]
		if len(files) > 1 {
			shown = fmt.Sprintf("%s and %d more", files[0], len(files)-1)
		}
		out = append(out, fmt.Sprintf("%s copies files that %s may still change (open for writing: %s) before the workload is frozen, as it does not run after step.%s; "+
			"the target would restore it on files that changed after they were copied. Make it run after the dump (depends_on = [step.%s])", by, w.Kind+"."+w.Name, shown, dumps[0], dumps[0]))
	}
	return out
}
