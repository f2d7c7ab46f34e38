package steps

import (
	"context"
	"fmt"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/zclconf/go-cty/cty"

	"github.com/mig-project/mig/engine/args"
	"github.com/mig-project/mig/engine/host"
)

// Archive packs a directory on a host into a zstd-compressed tar with a
// manifest of every file's sha256 inside it:
//
//	step "archive" "pack" {
//	  host        = host.src
//	  source      = "/var/lib/mig/images/web"
//	  destination = "/var/lib/mig/images/web.tar.zst"
//	  temporary   = true  # the commit removes the archive
//	}
//
// A file already at destination is kept aside until the run commits; undo
// removes the archive and puts it back. Outputs: path, bytes, sha256 (of the
// archive file) and manifest (file name to sha256).
type Archive struct{}

func (Archive) Spec() hcldec.Spec { return args.Spec[archiveArgs]() }

// archiveArgs are the arguments of archive and unarchive steps.
type archiveArgs struct {
	Host        hostRef `arg:"host,required"`
	Source      string  `arg:"source,required,abs"`
	Destination string  `arg:"destination,required,abs"`
	// Temporary: the commit removes destination (an archive that only
	// carried the images, or what it was extracted to).
	Temporary bool `arg:"temporary"`
}

// temporary is an archive or unarchive step's temporary argument.
func temporary(cfg cty.Value) bool {
	var a archiveArgs
	args.Decode(cfg, &a)
	return a.Temporary
}

func (Archive) Outputs() cty.Type {
	return cty.Object(map[string]cty.Type{
		"path":     cty.String,
		"bytes":    cty.Number,
		"sha256":   cty.String,
		"manifest": cty.Map(cty.String),
	})
}

// Host is where the step runs: its host argument.
func (Archive) Host(cfg cty.Value) string { return hostArg(cfg) }

func (Archive) Plan(ctx context.Context, cfg cty.Value, env Env) (Preview, hcl.Diagnostics) {
	return planArchive(cfg, "pack %s into %s with a sha256 manifest")
}

func planArchive(cfg cty.Value, note string) (Preview, hcl.Diagnostics) {
	a := archiveArgs{Source: "(known after apply)", Destination: "(known after apply)"}
	args.Decode(cfg, &a)
	note = fmt.Sprintf(note, a.Source, a.Destination)
	if a.Temporary {
		note += "; the commit removes it"
	}
	return Preview{Notes: []string{note}}, nil
}

// archiveRequest is the host and the request of an archive or unarchive
// step; what it replaces is kept aside until the run ends.
func archiveRequest(cfg cty.Value, env Env) (host.Host, host.ArchiveRequest, error) {
	var arg archiveArgs
	args.Decode(cfg, &arg)
	h, err := HostOf(env, arg.Host.Value)
	return h, host.ArchiveRequest{Source: arg.Source, Destination: arg.Destination, KeepAside: true}, err
}

func (Archive) Apply(ctx context.Context, cfg cty.Value, env Env) (Result, error) {
	h, req, err := archiveRequest(cfg, env)
	if err != nil {
		return Result{}, err
	}
	var res host.ArchiveResult
	if err := host.ActArchive.Call(ctx, h, req, &res, host.CallOpts{}); err != nil {
		return Result{}, err
	}
	manifest := map[string]cty.Value{}
	for name, f := range res.Manifest {
		manifest[name] = cty.StringVal(f.SHA256)
	}
	m := cty.MapValEmpty(cty.String)
	if len(manifest) > 0 {
		m = cty.MapVal(manifest)
	}
	pl, temp := placed(res.Placed, res.Path), temporary(cfg)
	return Result{
		Outputs: cty.ObjectVal(map[string]cty.Value{
			"path":     cty.StringVal(res.Path),
			"bytes":    Num(res.Bytes),
			"sha256":   cty.StringVal(res.SHA256),
			"manifest": m,
		}),
		Undo:    putBack(h, pl),
		Commit:  dropAside(h, pl, temp),
		Replay:  placedReplay(hostArg(cfg), pl, temp),
		Metrics: map[string]float64{"bytes": float64(res.Bytes), "files": float64(len(res.Manifest))},
	}, nil
}

// Unarchive extracts an archive made by the archive kind:
//
//	step "unarchive" "unpack" {
//	  host        = host.dst
//	  source      = "/var/lib/mig/images/web.tar.zst"
//	  destination = "/var/lib/mig/images/web"
//	}
//
// It reads the whole archive and checks every file against the manifest
// before extracting anything, so a corrupted archive is refused. It
// extracts to a temporary directory and renames it over destination. What
// destination held is kept aside until the run commits; undo puts it back.
type Unarchive struct{}

func (Unarchive) Spec() hcldec.Spec { return args.Spec[archiveArgs]() }

func (Unarchive) Outputs() cty.Type {
	return cty.Object(map[string]cty.Type{
		"path":  cty.String,
		"files": cty.Number,
		"bytes": cty.Number,
	})
}

// Host is where the step runs: its host argument.
func (Unarchive) Host(cfg cty.Value) string { return hostArg(cfg) }

func (Unarchive) Plan(ctx context.Context, cfg cty.Value, env Env) (Preview, hcl.Diagnostics) {
	return planArchive(cfg, "check %s against its manifest, then extract it to %s")
}

func (Unarchive) Apply(ctx context.Context, cfg cty.Value, env Env) (Result, error) {
	h, req, err := archiveRequest(cfg, env)
	if err != nil {
		return Result{}, err
	}
	var res host.UnarchiveResult
	if err := host.ActUnarchive.Call(ctx, h, req, &res, host.CallOpts{}); err != nil {
		return Result{}, err
	}
	pl, temp := placed(res.Placed, res.Path), temporary(cfg)
	return Result{
		Outputs: cty.ObjectVal(map[string]cty.Value{
			"path":  cty.StringVal(res.Path),
			"files": Num(int64(res.Files)),
			"bytes": Num(res.Bytes),
		}),
		Undo:    putBack(h, pl),
		Commit:  dropAside(h, pl, temp),
		Replay:  placedReplay(hostArg(cfg), pl, temp),
		Metrics: map[string]float64{"bytes": float64(res.Bytes), "files": float64(res.Files)},
	}, nil
}
