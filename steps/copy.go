package steps

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/zclconf/go-cty/cty"

	"github.com/mig-project/mig/engine"
	"github.com/mig-project/mig/engine/args"
	"github.com/mig-project/mig/engine/host"
)

// Copy streams a file or a directory from one host to another:
//
//	step "copy" "images" {
//	  from        = host.src
//	  to          = host.dst
//	  source      = "/var/lib/mig/images/web"
//	  destination = "/var/lib/mig/images/web"
//	  direct      = false
//	  merge       = false
//	  sync        = true
//	  temporary   = false  # true: the commit removes the copy (an archive in transit)
//	  delta       = false  # true: send only the blocks that differ from the destination's
//	  seed        = false  # true: files may change while read (a later delta makes them whole)
//	}
//
// The bytes are relayed through mig without touching its disk, or, with
// direct = true, sent straight from the source to the destination (an SSH
// host, reached at its SSH address) over TLS with a one-time certificate
// and token that travel through the SSH sessions. The
// destination checks the sha256 the source computed on the fly, and renames
// the copy into place only then; an existing destination is replaced, or,
// with merge = true, a directory's files are added to it (as beside the
// pages a page server wrote). What the destination held is kept aside until
// the run commits: undo puts it back (after a merge, it removes only what
// the copy added), commit deletes the aside copy.
//
// The destination fsyncs what it wrote before the step ends, so that the
// copy survives a power loss. sync = false skips that, which saves a few
// milliseconds per file: the shipped workflows use it for checkpoint images,
// which the restore reads once, right away, and whose source keeps its own
// copy until the run commits.
//
// delta = true, for a directory, sends of each file the destination
// already holds only the 1 MiB blocks whose sha256 differs; the
// destination builds the new directory from its old files and those
// blocks. database.hcl copies a data directory while the server runs (a
// seed, inconsistent), then, frozen, the delta: the pause carries what
// changed in between, not the whole directory. The source reads its files
// twice, so a delta copy must run after the dump that freezes their
// writer. seed = true is the copy before: a file that changes while it is
// read is copied as far as it goes and padded to the size it had, and one
// that goes is left out.
type Copy struct{}

// copyArgs are a copy step's arguments.
type copyArgs struct {
	From        hostRef `arg:"from,required"`
	To          hostRef `arg:"to,required"`
	Source      string  `arg:"source,required,abs"`
	Destination string  `arg:"destination,required,abs"`
	Direct      bool    `arg:"direct"`
	Merge       bool    `arg:"merge"`
	Sync        bool    `arg:"sync" default:"true"`
	Temporary   bool    `arg:"temporary"`
	Delta       bool    `arg:"delta"`
	Seed        bool    `arg:"seed"`
}

func (a *copyArgs) Check(cty.Value) hcl.Diagnostics {
	if a.Seed && a.Delta {
		return hcl.Diagnostics{errDiag("Invalid seed", "seed = true copies files that change while they are read; delta = true compares files that do not. The seed goes before the freeze, the delta after it.")}
	}
	if a.Delta && a.Merge {
		return hcl.Diagnostics{errDiag("Invalid delta", "delta = true replaces the destination with the source's files, built from the blocks that differ; merge = true adds files to it instead. Choose one.")}
	}
	if a.Temporary && a.Merge {
		return hcl.Diagnostics{errDiag("Invalid temporary", "temporary = true removes the destination once the run commits, and with merge = true that is more than the copy placed there.")}
	}
	return nil
}

func (Copy) Spec() hcldec.Spec { return args.Spec[copyArgs]() }

func (Copy) Outputs() cty.Type {
	return cty.Object(map[string]cty.Type{
		"path":    cty.String,
		"bytes":   cty.Number,
		"sha256":  cty.String,
		"seconds": cty.Number,
	})
}

// Host is where the step runs: the host it copies to.
func (Copy) Host(cfg cty.Value) string { return HostName(Attr(cfg, "to")) }

func (Copy) Plan(ctx context.Context, cfg cty.Value, env Env) (Preview, hcl.Diagnostics) {
	a := copyArgs{Source: "(known after apply)", Destination: "(known after apply)"}
	args.Decode(cfg, &a)
	from, to := a.From.Name(), a.To.Name()
	var p Preview
	if from != "" && to != "" {
		how := "relayed through mig"
		if a.Direct {
			how = "directly over TLS"
		}
		note := fmt.Sprintf("stream %s:%s to %s:%s %s, sha256-checked", from, a.Source, to, a.Destination, how)
		if !a.Sync {
			note += ", not synced to disk"
		}
		if a.Temporary {
			note += "; the commit removes the copy"
		}
		if a.Delta {
			note += fmt.Sprintf("; delta: of the files %s already holds at %s, only the blocks that differ travel", to, a.Destination)
		}
		if a.Seed {
			note += "; seed: files that change while read are copied torn, for a later delta = true copy to make whole"
		}
		p.Notes = append(p.Notes, note)
	}
	var diags hcl.Diagnostics
	if a.Seed && !deltaAfter(env, to, a.Destination) {
		diags = append(diags, warnDiag("Seed without a delta", fmt.Sprintf(
			"step.%s copies %s:%s torn, and no copy with delta = true to it runs after it: the target keeps files that may be torn. Add one after the final dump.",
			selfName(env), to, a.Destination)))
	}
	note, rdiags := copyRoom(ctx, env, cfg)
	if note != "" {
		p.Notes = append(p.Notes, note)
	}
	return p, append(diags, rdiags...)
}

// deltaAfter says whether a copy with delta = true to path on hostName
// runs after this step.
func deltaAfter(env Env, hostName, path string) bool {
	if env.Self == nil {
		return true // nothing to tell by
	}
	b := broughtPaths(env, hostName, func(p Planned) bool {
		return p.Kind == "copy" && Bool(p.Cfg, "delta", false) && p.After(env.Self.Name)
	})
	return len(b[filepath.Clean(path)]) > 0
}

// selfName is the step's name, where the plan tells it.
func selfName(env Env) string {
	if env.Self == nil {
		return "?"
	}
	return env.Self.Name
}

// copyRoom refuses, in plan, a copy whose source is known now and would
// not fit at its destination: the destination checks again before it
// writes, but by then a move has frozen its workload for nothing. What
// the destination held stays (aside) until the run commits, so the copy
// needs all its bytes in free room.
func copyRoom(ctx context.Context, env Env, cfg cty.Value) (string, hcl.Diagnostics) {
	source, dest := String(cfg, "source", ""), String(cfg, "destination", "")
	if source == "" || dest == "" {
		return "", nil
	}
	src, err1 := HostOf(env, Attr(cfg, "from"))
	dst, err2 := HostOf(env, Attr(cfg, "to"))
	if err1 != nil || err2 != nil {
		return "", nil
	}
	var have, room host.StatResult
	if err := host.ActStat.Call(ctx, src, host.PathRequest{Path: source, Room: true}, &have, host.CallOpts{}); err != nil {
		return fmt.Sprintf("host %s: cannot measure %s: %s", src.Name(), source, oneLine(err)), nil
	}
	if !have.Exists {
		return "", nil // an earlier step makes it
	}
	if err := host.ActStat.Call(ctx, dst, host.PathRequest{Path: dest, Room: true}, &room, host.CallOpts{}); err != nil {
		return fmt.Sprintf("host %s: cannot check the room for %s: %s", dst.Name(), dest, oneLine(err)), nil
	}
	merge := Bool(cfg, "merge", false)
	if len(room.Users) > 0 && !merge {
		return "", hcl.Diagnostics{errDiag("Copy over files in use on host "+dst.Name(), fmt.Sprintf(
			"%s on %s is in use there (%s has files open in it): the copy would put it aside and, once the run commits, delete it, "+
				"under that process. Stop it there, or choose another destination.", dest, dst.Name(), strings.Join(room.Users, ", ")))}
	}
	replaces := ""
	if room.Exists && !merge {
		replaces = fmt.Sprintf("; it replaces what is there (%s, kept aside until the run commits, then deleted)", engine.FormatBytes(float64(room.Bytes)))
	}
	if room.Free < 0 {
		return strings.TrimPrefix(replaces, "; "), nil
	}
	// A delta after an earlier copy there (a seed) builds a whole new copy
	// beside that one, which stays aside until the run commits.
	need, what, needs := have.Bytes, "the copy", "needs"
	if Bool(cfg, "delta", false) && copiedBefore(env, dst.Name(), dest) {
		need, what, needs = 2*have.Bytes, "the copy and the earlier one it is built from", "need"
	}
	if need > room.Free {
		return "", hcl.Diagnostics{errDiag("No room for the copy on host "+dst.Name(), fmt.Sprintf("%s:%s holds %s; %s %s %s, and the file system of %s on %s has %s free (what it holds there now stays aside until the run commits): free some space there, or choose another destination.",
			src.Name(), source, engine.FormatBytes(float64(have.Bytes)), what, needs, engine.FormatBytes(float64(need)), dest, dst.Name(), engine.FormatBytes(float64(room.Free))))}
	}
	return fmt.Sprintf("host %s: %s (%s) fits in %s (%s free)%s", dst.Name(), what, engine.FormatBytes(float64(need)), dest, engine.FormatBytes(float64(room.Free)), replaces), nil
}

// copiedBefore says whether a copy to path on hostName runs before this
// step.
func copiedBefore(env Env, hostName, path string) bool {
	b := broughtBefore(env, hostName)
	return slices.ContainsFunc(b[filepath.Clean(path)], func(p Planned) bool { return p.Kind == "copy" })
}

func (Copy) Apply(ctx context.Context, cfg cty.Value, env Env) (Result, error) {
	var arg copyArgs
	args.Decode(cfg, &arg)
	src, err := HostOf(env, arg.From.Value)
	if err != nil {
		return Result{}, fmt.Errorf("from: %w", err)
	}
	dst, err := HostOf(env, arg.To.Value)
	if err != nil {
		return Result{}, fmt.Errorf("to: %w", err)
	}
	source, dest := arg.Source, arg.Destination
	env.Log.Debug("copy", "from", src.Name(), "source", source, "to", dst.Name(), "destination", dest)
	opts := host.CopyOptions{Progress: env.Progress, Merge: arg.Merge, KeepAside: true, NoSync: !arg.Sync, Delta: arg.Delta, Torn: arg.Seed}
	if arg.Direct {
		ip := String(arg.To.Value, "address", "")
		if ip == "" {
			return Result{}, fmt.Errorf("direct = true needs a destination reached over the network; host %q is the local machine", dst.Name())
		}
		opts.Direct = ip
	}
	res, err := host.CopyWith(ctx, src, source, dst, dest, opts)
	if err != nil {
		return Result{}, err
	}
	return Result{
		Outputs: cty.ObjectVal(map[string]cty.Value{
			"path":    cty.StringVal(dest),
			"bytes":   Num(res.Bytes),
			"sha256":  cty.StringVal(res.SHA256),
			"seconds": cty.NumberFloatVal(res.Seconds),
		}),
		Undo:    putBack(dst, res.Placed),
		Commit:  dropAside(dst, res.Placed, arg.Temporary),
		Replay:  placedReplay(HostName(arg.To.Value), res.Placed, arg.Temporary),
		Metrics: map[string]float64{"bytes": float64(res.Bytes), "moved_bytes": float64(res.Bytes), "seconds": res.Seconds},
	}, nil
}

// putBack is the undo of a step that placed content on a host: one
// fs.put-back call, whose request says everything it needs, so that it can
// be replayed from a run record.
func putBack(h host.Host, pl host.Placed) func(context.Context) error {
	return func(ctx context.Context) error {
		return host.ActPutBack.Call(ctx, h, pl, nil, host.CallOpts{})
	}
}

// dropAside is the commit of such a step: it deletes what was kept aside,
// and, when temporary (an archive that only carried the images), what
// the step placed.
func dropAside(h host.Host, pl host.Placed, temporary bool) func(context.Context) error {
	calls := commitPlaced("", pl, temporary)
	if len(calls) == 0 {
		return nil
	}
	return func(ctx context.Context) error {
		var errs []error
		for _, c := range calls {
			errs = append(errs, h.Call(ctx, c.Action, c.Req, nil, host.CallOpts{}))
		}
		return errors.Join(errs...)
	}
}

// placedReplay is putBack and dropAside as agent actions on hostName,
// which the host replays should mig die before the run ends: what the
// step placed goes, and what it displaced comes back.
func placedReplay(hostName string, pl host.Placed, temporary bool) Replay {
	return Replay{
		Undo:   []host.Invocation{host.ActPutBack.Invocation(hostName, pl, "")},
		Commit: commitPlaced(hostName, pl, temporary),
	}
}

// commitPlaced is the commit of a step that placed pl on hostName.
func commitPlaced(hostName string, pl host.Placed, temporary bool) []host.Invocation {
	var calls []host.Invocation
	remove := func(path string) {
		calls = append(calls, host.ActRemove.Invocation(hostName, host.RemoveRequest{Path: path, Recursive: true}, ""))
	}
	if pl.Aside != "" {
		remove(pl.Aside)
	}
	if temporary && pl.Path != "" {
		remove(pl.Path)
	}
	return calls
}

// placed returns what an action reported it displaced, or, from an agent
// that reports nothing, a Placed whose undo removes path.
func placed(pl *host.Placed, path string) host.Placed {
	if pl == nil {
		return host.Placed{Path: path}
	}
	return *pl
}
