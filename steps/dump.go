package steps

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/zclconf/go-cty/cty"

	"github.com/mig-project/mig/engine"
	"github.com/mig-project/mig/engine/args"
	"github.com/mig-project/mig/engine/host"
	"github.com/mig-project/mig/steps/criu"
)

// Dump is the final checkpoint of a workload. It leaves the source frozen
// (held) so that the run can still roll back:
//
//	step "dump" "final" {
//	  workload   = process.web
//	  mode       = "disk"              # "disk" | "page-server" | "lazy"
//	  dir        = "/var/lib/mig/web/final"
//	  target     = host.h2             # page-server and lazy: the host that restores
//	  target_dir = "/var/lib/mig/web/final" # page-server: dir on the target, default dir
//	  parent     = step.pre.last_dir   # optional: the last pre-dump round
//	  address    = "10.77.0.12"        # page-server: target's address; lazy: source's
//	  port       = 27000               # lazy: port the source serves pages on (default: any free)
//	  send_images = true               # send the images to target_dir on target (no copy step)
//	  keep_images = true               # page-server and lazy: keep dir's images after the commit
//	}
//
// In "page-server" mode the memory pages go straight into target_dir on
// the target; only the small images stay in dir (copy them after). In
// "lazy" mode the source keeps its pages and serves them to the restore
// (`restore { lazy = true  source = step.final.lazy }`) until the last
// one arrived. Undo resumes the source and unlocks its network; Commit
// kills it.
//
// With send_images, the dump sends its images into target_dir on the
// target itself, over a TLS stream it opens before the freeze (as a
// direct copy does), as soon as CRIU has written them: a copy step after
// the dump would add its round trips to the pause. What target_dir held
// before is kept aside until the run commits, as a copy does.
//
// In page-server and lazy modes the images in dir cannot restore the
// workload by themselves (its pages are on the target, or in the source
// it kills), so the commit removes them (the restore removes those it
// read on the target); keep_images keeps them. A disk dump's images are
// the whole checkpoint, perhaps the only copy, and are never removed.
type Dump struct{}

// dumpArgs are a dump step's arguments.
type dumpArgs struct {
	Workload  workloadArg `arg:"workload,required"`
	Mode      string      `arg:"mode" enum:"disk,page-server,lazy" default:"disk"`
	Dir       string      `arg:"dir,required,abs"`
	Target    hostRef     `arg:"target"`
	TargetDir string      `arg:"target_dir,abs"`
	Parent    string      `arg:"parent"`
	Address   string      `arg:"address"`
	Port      int         `arg:"port" min:"0" max:"65535"`
	Send      bool        `arg:"send_images"`
	Keep      bool        `arg:"keep_images"`
}

func (a *dumpArgs) Check(cty.Value) hcl.Diagnostics {
	var diags hcl.Diagnostics
	if a.Mode == "page-server" && a.Target.IsNull() {
		diags = append(diags, errDiag("Missing target", "mode = \"page-server\" needs target, the host that runs the page server."))
	}
	if a.Send && a.Target.IsNull() {
		diags = append(diags, errDiag("Missing target", "send_images = true needs target, the host to send the images to."))
	}
	if a.Parent != "" && a.Dir != "" {
		if _, err := relParent(a.Dir, a.Parent); err != nil {
			diags = append(diags, errDiag("Invalid parent", err.Error()))
		}
	}
	return diags
}

func (Dump) Spec() hcldec.Spec { return args.Spec[dumpArgs]() }

// LazySource is the type of a lazy dump's `lazy` output, which a lazy
// restore takes as its source.
var LazySource = cty.Object(map[string]cty.Type{
	"host":    cty.String,
	"address": cty.String,
	"port":    cty.Number,
	"dir":     cty.String,
	"pid":     cty.Number,
})

func (Dump) Outputs() cty.Type {
	return cty.Object(map[string]cty.Type{
		"dir":        cty.String, // images dir on the source
		"target_dir": cty.String, // page-server and send_images: where pages or images went on the target; else dir
		"host":       cty.String, // source host
		"pid":        cty.Number, // source pid (held)
		"mode":       cty.String,
		"log":        cty.String, // CRIU's dump log on the source
		"lazy":       LazySource, // null unless mode = "lazy"
	})
}

type dumpCfg struct {
	w         workload
	mode      string
	dir       string
	target    string
	targetV   cty.Value
	targetDir string
	parent    string // relative to dir
	address   string
	port      int
	send      bool // send_images
	keep      bool // keep_images
}

// decodeDump reads a dump step's arguments; the spec has checked them.
func decodeDump(cfg cty.Value) (dumpCfg, hcl.Diagnostics) {
	var a dumpArgs
	args.Decode(cfg, &a)
	d := dumpCfg{
		mode:      a.Mode,
		dir:       a.Dir,
		target:    a.Target.Name(),
		targetV:   a.Target.Value,
		targetDir: a.TargetDir,
		address:   a.Address,
		port:      a.Port,
		send:      a.Send,
		keep:      a.Keep,
	}
	if d.targetDir == "" {
		d.targetDir = d.dir
	}
	if a.Parent != "" && d.dir != "" {
		d.parent, _ = relParent(d.dir, a.Parent)
	}
	var diags hcl.Diagnostics
	w, err := workloadOf(a.Workload.Value)
	if err != nil {
		diags = append(diags, errDiag("Invalid workload", err.Error()))
	}
	d.w = w
	return d, diags
}

// relParent makes a parent images dir relative to dir, as CRIU wants it.
func relParent(dir, parent string) (string, error) {
	if !filepath.IsAbs(parent) {
		return parent, nil
	}
	rel, err := filepath.Rel(dir, parent)
	if err != nil {
		return "", fmt.Errorf("parent %q relative to %q: %w", parent, dir, err)
	}
	return rel, nil
}

func errDiag(summary, detail string) *hcl.Diagnostic {
	return &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: detail}
}

func warnDiag(summary, detail string) *hcl.Diagnostic {
	return &hcl.Diagnostic{Severity: hcl.DiagWarning, Summary: summary, Detail: detail}
}

// Host is where the step runs: the workload's host.
func (Dump) Host(cfg cty.Value) string { return workloadHost(cfg) }

func (Dump) Plan(ctx context.Context, cfg cty.Value, env Env) (Preview, hcl.Diagnostics) {
	d, diags := decodeDump(cfg)
	if diags.HasErrors() {
		return Preview{}, diags
	}
	var p Preview
	r, note, rerr := resolveNote(ctx, env, d.w)
	ok := rerr == nil
	if !ok && strings.Contains(note, criu.HeldByRun) {
		// An interrupted run still holds the workload: nothing may start.
		return p, append(diags, errDiag("Workload held by another run", note))
	}
	clean := ""
	if d.mode != "disk" && !d.keep {
		clean = ", which removes these images (keep_images = true keeps them)"
	}
	p.Notes = append(p.Notes, fmt.Sprintf("%s dump to %s; the source stays frozen until the run commits%s", d.mode, orKnownLater(d.dir), clean))
	if d.send && d.target != "" {
		p.Notes = append(p.Notes, fmt.Sprintf("sends the images to %s:%s over TLS, on a connection opened before the freeze", d.target, orKnownLater(d.targetDir)))
	}
	p.Notes = append(p.Notes, note)
	if d := notThere(env, d.w, rerr); d != nil {
		diags = append(diags, d)
	}
	var ports []int
	var needs criu.Needs
	if ok {
		ports = r.Listens
		needs, _ = withoutBrought(r.Needs, broughtAfter(env, d.target))
		for _, pr := range r.Problems {
			diags = append(diags, errDiag(fmt.Sprintf("Cannot checkpoint %s.%s on host %s", d.w.Kind, d.w.Name, d.w.host), strings.TrimSuffix(pr, ".")+"."))
		}
		if d.target != "" && d.target != d.w.host {
			for _, w := range r.Warnings {
				diags = append(diags, warnDiag(fmt.Sprintf("%s.%s may run twice after the move", d.w.Kind, d.w.Name), w+"."))
			}
		}
	}
	p.Notes = append(p.Notes, checkNotes(ctx, env, d.w.host, d.w.hostV, d.w, criu.CheckAction{CheckRequest: criu.CheckRequest{Lazy: d.mode == "lazy"}, Source: true})...)
	if ok && len(r.UDP) > 0 {
		p.Notes = append(p.Notes, fmt.Sprintf("UDP ports %v: their datagrams wait (or are dropped) as new connections do, from the freeze until the restore ends, and are never refused", r.UDP))
	}
	if src, err := env.Hosts(d.w.host); ok && err == nil {
		ps, err := fixedAddrProblems(ctx, src, d, r)
		if err != nil {
			p.Notes = append(p.Notes, fmt.Sprintf("cannot check the connections' addresses: %s", oneLine(err)))
		}
		for _, pr := range ps {
			diags = append(diags, errDiag(fmt.Sprintf("Cannot move %s.%s to host %s", d.w.Kind, d.w.Name, d.target), pr+"."))
		}
		if d.target != "" && d.target != d.w.host {
			for _, w := range loopbackPeers(d.w.String(), r.Conns) {
				diags = append(diags, warnDiag("Connection to a process that stays on "+d.w.host, w+"."))
			}
		}
		notes, ds := d.room(ctx, env, src, r)
		p.Notes = append(p.Notes, notes...)
		diags = append(diags, ds...)
	}
	if d.target != "" && d.target != d.w.host {
		feats := []string{}
		if d.mode == "lazy" {
			feats = append(feats, criu.FeatureUffd)
		}
		p.Notes = append(p.Notes, checkNotes(ctx, env, d.target, d.targetV, d.w, criu.CheckAction{
			CheckRequest: criu.CheckRequest{Ports: ports, Needs: needs, Lazy: d.mode == "lazy"}, Features: feats})...)
	}
	return p, diags
}

// room refuses a dump whose pages would not fit where they go: CRIU would
// fail with the workload frozen. They go into dir on the source (disk
// mode), and into target_dir on the target (page-server mode, and a
// dump's send_images). A dump with a parent writes only the pages changed
// since, and is not checked. A lazy dump writes only the memory CRIU does
// not serve lazily (shared and locked), with its small images, which are
// best kept on a tmpfs: room says so when many connections would make a
// disk's file creates lengthen the pause.
func (d dumpCfg) room(ctx context.Context, env Env, src host.Host, r criu.Resolved) ([]string, hcl.Diagnostics) {
	type place struct{ host, dir, arg string }
	var places []place
	lazy := d.mode == "lazy"
	if d.mode == "disk" || lazy {
		places = append(places, place{d.w.host, d.dir, "dir"})
	}
	if d.target != "" && (d.mode == "page-server" || d.send) {
		places = append(places, place{d.target, d.targetDir, "target_dir"})
	}
	if r.PID <= 0 || !lazy && (d.parent != "" || len(places) == 0) {
		return nil, nil
	}
	var mem criu.Room
	if err := criu.ActRoom.Call(ctx, src, criu.RoomRequest{PID: r.PID}, &mem, host.CallOpts{}); err != nil {
		return []string{fmt.Sprintf("cannot measure the memory to dump: %s", oneLine(err))}, nil
	}
	var notes []string
	var diags hcl.Diagnostics
	need, what := mem.Memory, "of memory to dump"
	if lazy {
		diags = d.lazyRoom(mem)
		need, what = mem.Eager, "of shared and locked memory, which a lazy dump writes with its images in the freeze,"
	}
	need += 1 << 20 // and the other images, a few KiB to a MiB
	for _, p := range places {
		if p.dir == "" {
			continue
		}
		var room criu.Room
		h, err := env.Hosts(p.host)
		if err == nil {
			err = criu.ActRoom.Call(ctx, h, criu.RoomRequest{Dir: p.dir}, &room, host.CallOpts{})
		}
		if err == nil && lazy && !room.InMemory && len(r.Conns) >= manyConns {
			notes = append(notes, fmt.Sprintf("host %s: %s is not on a tmpfs, and CRIU writes an image there for each of the %d TCP connections "+
				"in the pause: a disk's file creates lengthen it (0.15–0.5 ms each on some ext4 hosts). "+
				"A lazy dump's images are small: a %s on a tmpfs such as /run/mig avoids that", p.host, p.dir, len(r.Conns), p.arg))
		}
		switch {
		case err != nil:
			notes = append(notes, fmt.Sprintf("host %s: cannot check the room in %s: %s", p.host, p.dir, oneLine(err)))
		case room.Free < 0:
			notes = append(notes, fmt.Sprintf("host %s: cannot tell the room in %s", p.host, p.dir))
		case room.Free < need:
			fix := fmt.Sprintf("Free space there, set %s to a larger file system, or use mode = \"lazy\", which writes no pages.", p.arg)
			if lazy {
				fix = fmt.Sprintf("Free space there, or set %s to a larger file system.", p.arg)
			}
			diags = append(diags, errDiag("No room for the images on host "+p.host, fmt.Sprintf(
				"%s.%s has about %s %s and %s has %s free: CRIU would fail with the workload frozen. %s",
				d.w.Kind, d.w.Name, engine.FormatBytes(float64(need)), what, p.dir, engine.FormatBytes(float64(room.Free)), fix)))
		case lazy:
			if mem.Eager >= 1<<20 {
				notes = append(notes, fmt.Sprintf("host %s: the shared and locked memory the lazy dump writes in the freeze (about %s) fits in %s (%s free)",
					p.host, engine.FormatBytes(float64(mem.Eager)), p.dir, engine.FormatBytes(float64(room.Free))))
			}
		default:
			notes = append(notes, fmt.Sprintf("host %s: the pages (about %s) fit in %s (%s free)",
				p.host, engine.FormatBytes(float64(mem.Memory)), p.dir, engine.FormatBytes(float64(room.Free))))
		}
	}
	return notes, diags
}

// manyConns is the number of TCP connections from which a lazy dump's
// images dir on a disk gets a plan note.
const manyConns = 100

// lazyRoom refuses a lazy dump that CRIU could not start: it allocates
// an iovec for every page of a process's private address space, resident
// or not, and servers that reserve terabytes of it (MariaDB reserves 8
// TiB) make that allocation fail with the workload frozen ("page-pipe:
// Can't allocate").
func (d dumpCfg) lazyRoom(mem criu.Room) hcl.Diagnostics {
	if mem.Allocatable <= 0 || mem.LazyBytes <= mem.Allocatable {
		return nil
	}
	return hcl.Diagnostics{errDiag("CRIU's lazy dump cannot track "+d.w.Kind+"."+d.w.Name+" on host "+d.w.host, fmt.Sprintf(
		"pid %d has %s of private address space (reserved, mostly not in memory), and CRIU's lazy dump allocates 16 bytes "+
			"for every page of it: %s, more than one allocation may take there (%s). It would fail with the workload frozen. "+
			"Use mode = \"page-server\" or \"disk\", which do not.",
		mem.PrivatePID, engine.FormatBytes(float64(mem.Private)), engine.FormatBytes(float64(mem.LazyBytes)), engine.FormatBytes(float64(mem.Allocatable))))}
}

func orKnownLater(s string) string {
	if s == "" {
		return "(known after apply)"
	}
	return s
}

// checkNotes runs criu.check on a host and turns its findings into plan
// notes.
func checkNotes(ctx context.Context, env Env, hostName string, hostV cty.Value, w workload, req criu.CheckAction) []string {
	if hostName == "" {
		return nil
	}
	res, err := check(ctx, env, hostName, hostV, w, req)
	if err != nil {
		return []string{fmt.Sprintf("host %s: cannot check CRIU: %s", hostName, oneLine(err))}
	}
	var notes []string
	for _, pr := range res.Problems {
		notes = append(notes, fmt.Sprintf("host %s: %s", hostName, pr))
	}
	for f, ok := range res.Features {
		if !ok {
			notes = append(notes, fmt.Sprintf("host %s: CRIU feature %s is missing", hostName, f))
		}
	}
	if n := newConnectionsNote(hostName, w, res, req.Source); n != "" {
		notes = append(notes, n)
	}
	return notes
}

// newConnectionsNote says what a host does with new connections to w while
// it is frozen (the source), or how the target is guarded until the
// restore there ends.
func newConnectionsNote(hostName string, w workload, res criu.CheckResult, source bool) string {
	var what string
	switch res.NewConnections {
	case criu.NewHold:
		what = fmt.Sprintf("new connections held (%s), then let through", res.Queue)
	case criu.NewDrop:
		what = "new connections dropped"
		if res.Queue == "" {
			what += " (this host cannot queue packets: clients retransmit their SYN after about 1s)"
		}
	case criu.NewReset:
		what = "new connections refused with a reset"
	default:
		return ""
	}
	if source {
		if o, _ := w.Options(); o.TCPEstablished && w.Kind == "process" && res.NewConnections == criu.NewHold {
			what += "; its connections' segments held too, from just before the freeze, and sent on to the target once the address moves"
		}
		return fmt.Sprintf("host %s: while %s.%s is frozen: %s", hostName, w.Kind, w.Name, what)
	}
	return fmt.Sprintf("host %s: guarded from before the freeze until the restore there ends: packets of %s.%s's connections dropped, %s", hostName, w.Kind, w.Name, what)
}

func check(ctx context.Context, env Env, hostName string, hostV cty.Value, w workload, req criu.CheckAction) (criu.CheckResult, error) {
	var res criu.CheckResult
	h, err := env.Hosts(hostName)
	if err != nil {
		return res, err
	}
	req.CRIU = criuSetting(hostV)
	if w.known {
		req.Workload = w.Workload
	}
	err = criu.ActCheck.Call(ctx, h, req, &res, host.CallOpts{})
	return res, err
}

// hostAddress is the address other hosts reach a host at: its value's
// address, or loopback for the local machine.
func hostAddress(hostV cty.Value) string {
	return String(hostV, "address", "127.0.0.1")
}

func (Dump) Apply(ctx context.Context, cfg cty.Value, env Env) (Result, error) {
	d, diags := decodeDump(cfg)
	if diags.HasErrors() {
		return Result{}, diags
	}
	src, err := env.Hosts(d.w.host)
	if err != nil {
		return Result{}, err
	}
	var r criu.Resolved
	if err := criu.ActResolve.Call(ctx, src, d.w.request(), &r, host.CallOpts{}); err != nil {
		return Result{}, err
	}
	env.Log.Info("dumping", "workload", d.w.String(), "resolved", r.Description, "mode", d.mode)
	if len(r.Problems) > 0 {
		return Result{}, fmt.Errorf("%s cannot be checkpointed on %s, so nothing was frozen: %s", d.w.String(), d.w.host, joinLines(r.Problems))
	}

	// Everything that can be checked is checked before the freeze.
	if d.mode == "lazy" {
		if err := problems(check(ctx, env, d.w.host, d.w.hostV, d.w, criu.CheckAction{CheckRequest: criu.CheckRequest{Lazy: true}})); err != nil {
			return Result{}, fmt.Errorf("source %s: %w", d.w.host, err)
		}
	}
	var tgt host.Host
	if d.target != "" {
		if tgt, err = env.Hosts(d.target); err != nil {
			return Result{}, err
		}
		req := criu.CheckAction{CheckRequest: criu.CheckRequest{Lazy: d.mode == "lazy"}}
		if d.target != d.w.host {
			req.Ports = r.Listens
			req.Needs, _ = withoutBrought(r.Needs, broughtAfter(env, d.target))
		}
		if d.mode == "lazy" {
			req.Features = []string{criu.FeatureUffd}
		}
		if err := problems(check(ctx, env, d.target, d.targetV, d.w, req)); err != nil {
			return Result{}, fmt.Errorf("target %s: %w", d.target, err)
		}
		ps, err := fixedAddrProblems(ctx, src, d, r)
		if err != nil {
			return Result{}, err
		}
		if len(ps) > 0 {
			return Result{}, fmt.Errorf("%s cannot be moved to %s, so nothing was frozen: %s", d.w.String(), d.target, joinLines(ps))
		}
		for _, w := range loopbackPeers(d.w.String(), r.Conns) {
			env.Log.Warn(w)
		}
		for _, w := range r.Warnings {
			env.Log.Warn(w)
		}
	}

	dreq := criu.DumpAction{Request: d.w.request(), DumpRequest: criu.DumpRequest{Dir: d.dir, Parent: d.parent, Resolved: &r}}
	var ps *pageServer
	switch d.mode {
	case "page-server":
		addr := d.address
		if addr == "" {
			addr = targetAddress(d)
		}
		psReq := criu.PageServerAction{CRIU: criuSetting(d.targetV), Dir: d.targetDir, Parent: d.parent, Listen: criu.Addr{Host: addr}}
		if ps, err = startPageServer(ctx, src, tgt, psReq); err != nil {
			return Result{}, err
		}
		dreq.PageServer = &ps.addr
	case "lazy":
		addr := d.address
		if addr == "" {
			addr = hostAddress(d.w.hostV)
		}
		dreq.Lazy = true
		dreq.Listen = &criu.Addr{Host: addr, Port: d.port}
		if tgt != nil {
			if dreq.From, err = sourceAddress(ctx, tgt, addr); err != nil {
				return Result{}, err
			}
		}
	}

	var tgtHold *host.HoldRef
	if env.Hold != nil && d.target != "" && d.target != d.w.host {
		// Open the target's lease now, not while the source is frozen.
		if tgtHold, err = env.Hold(ctx, d.target); err != nil {
			ps.stop(ctx)
			return Result{}, fmt.Errorf("target %s cannot hold the run should mig die: %w", d.target, err)
		}
	}
	if env.Hold != nil {
		// The source host answers for the workload from the freeze on.
		if dreq.Hold, err = env.Hold(ctx, d.w.host); err != nil {
			ps.stop(ctx)
			return Result{}, fmt.Errorf("source %s cannot hold the workload should mig die: %w", d.w.host, err)
		}
	}
	// The target holds (or, without a queue, drops) the moved connections'
	// packets and new ones from before the freeze until the restore there
	// ends: the service address may move before that, and the target's
	// kernel must not reset them. Up before the freeze, it adds nothing to
	// the pause.
	guarded := tgt != nil && d.target != d.w.host
	greq := criu.GuardAction{Request: criu.Request{CRIU: criuSetting(d.targetV), Workload: d.w.Workload}, UDPPorts: r.UDP}
	guardUp := func(ctx context.Context, ports []int, conns []criu.Conn) error {
		greq.Op, greq.Ports, greq.Conns = "up", ports, conns
		var g criu.GuardResult
		if err := criu.ActGuard.Call(ctx, tgt, greq, &g, host.CallOpts{}); err != nil {
			return fmt.Errorf("guard on target %s: %w", d.target, err)
		}
		env.Log.Info("target guarded", "host", d.target, "ports", ports, "connections", len(conns), "new_connections", g.NewConnections, "queue", g.Queue)
		return nil
	}
	guardDown := func(ctx context.Context) error {
		if !guarded {
			return nil
		}
		greq.Op = "down"
		if err := criu.ActGuard.Call(ctx, tgt, greq, nil, host.CallOpts{}); err != nil {
			return fmt.Errorf("release the guard on %s: %w", d.target, err)
		}
		return nil
	}
	if guarded && tgtHold != nil {
		// Should mig die, the target takes its guard down either way.
		down := greq
		down.Op = "down"
		inv := []host.Invocation{criu.ActGuard.Invocation(d.target, down, "")}
		e := host.LeaseEntry{Step: tgtHold.Step, Undo: inv, Commit: inv}
		if err := host.ActHoldAdd.Call(ctx, tgt, host.HoldRequest{Run: tgtHold.Run, Entry: &e}, nil, host.CallOpts{}); err != nil {
			ps.stop(ctx)
			return Result{}, fmt.Errorf("target %s cannot hold the guard should mig die: %w", d.target, err)
		}
	}
	if guarded {
		if err := guardUp(ctx, r.Listens, nil); err != nil {
			ps.stop(ctx)
			return Result{}, errors.Join(err, guardDown(context.WithoutCancel(ctx)))
		}
	}

	send := d.send && d.target != d.w.host
	targetDir := d.dir
	if d.mode == "page-server" || send {
		targetDir = d.targetDir
	}
	var images *host.Receiver
	if send {
		// Listening, and the source connected, before the freeze.
		to := targetAddress(d)
		from, err := sourceAddress(ctx, src, to)
		if err == nil {
			// Beside the pages a page server wrote there, or the rounds
			// of a pre-copy; else in place of what was there.
			merge := d.mode == "page-server" || d.parent != ""
			images, err = host.Receive(ctx, tgt, targetDir, to, []string{from}, host.CopyOptions{Merge: merge, KeepAside: true, NoSync: true})
		}
		if err != nil {
			ps.stop(ctx)
			return Result{}, errors.Join(fmt.Errorf("receive the images on %s: %w", d.target, err), guardDown(context.WithoutCancel(ctx)))
		}
		dreq.Send = &images.Ticket
	}

	off := clockOffset(ctx, env, src)
	var res criu.DumpResult
	err = criu.ActDump.Call(ctx, src, dreq, &res, host.CallOpts{})
	dumpLog := func() string { return keepLog(ctx, env, src, filepath.Join(d.dir, criu.DumpLog)) }
	if err != nil {
		gerr := guardDown(context.WithoutCancel(ctx))
		if local := dumpLog(); ctx.Err() != nil && local != "" {
			err = stalled(err, local)
		}
		err = errors.Join(err, gerr)
		ps.stop(ctx)
		if images != nil {
			images.Cancel()
		}
		if ctx.Err() != nil {
			// Cancelled while CRIU ran: the dump may have held the source
			// without this step learning it. Resuming a running process
			// is harmless, so resume it.
			held := criu.HeldAction{Request: d.w.request(), Held: criu.Held{PID: r.PID, Dir: d.dir}}
			if rerr := criu.ActResume.Call(context.WithoutCancel(ctx), src, held, nil, host.CallOpts{}); rerr != nil {
				err = errors.Join(err, fmt.Errorf("resume %s after the cancel: %w", d.w.String(), rerr))
			}
		}
		return Result{}, err
	}
	env.Log.Info("dumped", "workload", d.w.String(), "dir", d.dir, "seconds", res.Seconds, "criu", res.CRIU, "log", res.LogPath)
	if w := lazyShortfall(d.mode, res.Stats); w != "" {
		env.Log.Warn(w, "workload", d.w.String(), "log", res.LogPath)
	}
	held := criu.HeldAction{Request: d.w.request(), Held: res.Held}
	var sent *host.Placed // what the images displaced on the target
	var imagesThere time.Time
	if images != nil {
		got, err := images.Wait()
		if res.SendError != "" {
			err = errors.New(res.SendError)
		} else if err == nil && (res.Sent == nil || got.SHA256 != res.Sent.SHA256 || got.Bytes != res.Sent.Bytes) {
			err = fmt.Errorf("the target got %d bytes with sha256 %s, not what the source sent", got.Bytes, got.SHA256)
		}
		var perr error
		if got.Placed != nil {
			pl := placed(got.Placed, targetDir)
			if err != nil {
				perr = putBack(tgt, pl)(context.WithoutCancel(ctx))
			}
			sent = &pl
		}
		if err != nil {
			dumpLog()
			return Result{}, errors.Join(fmt.Errorf("send the images to %s: %w", d.target, err), perr,
				guardDown(context.WithoutCancel(ctx)), criu.ActResume.Call(context.WithoutCancel(ctx), src, held, nil, host.CallOpts{}))
		}
		imagesThere = time.Now()
		env.Log.Debug("images sent", "host", d.target, "dir", targetDir, "bytes", got.Bytes)
	}
	// Outgoing connections have their own ports: guard them too. Those on
	// loopback cannot be reached from outside the target.
	conns := slices.DeleteFunc(slices.Clone(res.Conns), func(c criu.Conn) bool { return c.Local.Addr().IsLoopback() })
	if guarded && (len(conns) > 0 || !slices.Equal(res.Ports, r.Listens)) {
		// The target's guard takes them in place, without a restart.
		if err := guardUp(ctx, res.Ports, conns); err != nil {
			dumpLog()
			return Result{}, errors.Join(err, guardDown(context.WithoutCancel(ctx)), criu.ActResume.Call(context.WithoutCancel(ctx), src, held, nil, host.CallOpts{}))
		}
	}
	// The log is fetched by the undo or the commit, not now: the workload
	// is frozen, and every call here lengthens the pause.
	undo := func(ctx context.Context) error {
		dumpLog()
		// SYNs held on the target follow the address back first.
		gerr := guardDown(ctx)
		var ierr error
		if sent != nil {
			ierr = putBack(tgt, *sent)(ctx)
		}
		return errors.Join(gerr, ierr, criu.ActResume.Call(ctx, src, held, nil, host.CallOpts{}))
	}
	kill := held
	kill.AfterPages = d.mode == "lazy"
	lock := criu.HoldLock(res.Held)
	replay := Replay{
		Undo:   []host.Invocation{criu.ActResume.Invocation(d.w.host, held, lock)},
		Commit: []host.Invocation{criu.ActKill.Invocation(d.w.host, kill, lock)},
	}
	cleanup := d.mode != "disk" && !d.keep
	if cleanup && d.mode != "lazy" {
		// Not for lazy: a kill that fails there leaves the source frozen
		// as the only copy of some pages.
		replay.Commit = append(replay.Commit, criu.ActClean.Invocation(d.w.host, criu.CleanRequest{Dir: d.dir}, ""))
	}
	if sent != nil {
		rp := placedReplay(d.target, *sent, false)
		replay.Undo = append(replay.Undo, rp.Undo...)
		replay.Commit = append(replay.Commit, rp.Commit...)
	}
	if d.mode == "lazy" {
		replay.Decide = []host.Invocation{criu.ActLazyDecide.Invocation(d.w.host,
			criu.LazyDecideAction{Side: "source", Dir: res.Held.Dir, PID: res.Held.LazyPID, Port: res.Listen.Port}, "")}
	}
	if ps != nil {
		if err := ps.wait(ctx); err != nil {
			return Result{}, errors.Join(err, undo(ctx))
		}
	}
	pagesThere := time.Now()

	lazy := cty.NullVal(LazySource)
	if d.mode == "lazy" && res.Listen != nil {
		lazy = cty.ObjectVal(map[string]cty.Value{
			"host":    cty.StringVal(d.w.host),
			"address": cty.StringVal(res.Listen.Host),
			"port":    Num(int64(res.Listen.Port)),
			"dir":     cty.StringVal(d.dir),
			"pid":     Num(int64(res.Held.LazyPID)),
		})
	}
	metrics := map[string]float64{"dump_seconds": res.Seconds}
	for k, v := range res.Stats {
		metrics[k] = v
	}
	if d.mode == "page-server" {
		metrics["moved_bytes"] = metrics["pages_written"] * pageSize
		metrics["pages_on_target_unix"] = float64(pagesThere.UnixNano()) / 1e9
	}
	if images != nil {
		metrics["moved_bytes"] += float64(res.Sent.Bytes)
		metrics["images_on_target_unix"] = float64(imagesThere.UnixNano()) / 1e9
	}
	// The critical path of the pause, on the orchestrator's clock.
	clockMetrics(metrics, off)
	metrics["freeze_unix"] = unixOn(off, res.Times.Freeze)
	metrics["dumped_unix"] = unixOn(off, res.Times.End)
	return Result{
		Outputs: cty.ObjectVal(map[string]cty.Value{
			"dir":        cty.StringVal(d.dir),
			"target_dir": cty.StringVal(targetDir),
			"host":       cty.StringVal(d.w.host),
			"pid":        Num(int64(res.Held.PID)),
			"mode":       cty.StringVal(d.mode),
			"log":        cty.StringVal(res.LogPath),
			"lazy":       lazy,
		}),
		Undo: undo,
		Commit: func(ctx context.Context) error {
			dumpLog()
			gerr := guardDown(ctx)
			var ierr error
			if sent != nil {
				if drop := dropAside(tgt, *sent, false); drop != nil {
					ierr = drop(ctx)
				}
			}
			if err := criu.ActKill.Call(ctx, src, kill, nil, host.CallOpts{}); err != nil || !cleanup {
				return errors.Join(gerr, ierr, err)
			}
			return errors.Join(gerr, ierr, criu.ActClean.Call(ctx, src, criu.CleanRequest{Dir: d.dir}, nil, host.CallOpts{}))
		},
		Replay:  replay,
		Metrics: metrics,
	}, nil
}

// targetAddress is the address the source reaches the target's page
// server at.
func targetAddress(d dumpCfg) string {
	if d.target == d.w.host {
		return "127.0.0.1"
	}
	return hostAddress(d.targetV)
}

var errMissingFeature = errors.New("CRIU feature not supported on this host")

// problems turns a check's findings into an error.
func problems(res criu.CheckResult, err error) error {
	if err != nil {
		return err
	}
	if len(res.Problems) > 0 {
		return errors.New(joinLines(res.Problems))
	}
	for f, ok := range res.Features {
		if !ok {
			return fmt.Errorf("%w: %s", errMissingFeature, f)
		}
	}
	return nil
}

func joinLines(lines []string) string {
	if len(lines) == 1 {
		return lines[0]
	}
	s := ""
	for _, l := range lines {
		s += "\n  " + l
	}
	return s
}

// killPID kills a helper process (a page server) left on a host.
func killPID(ctx context.Context, h host.Host, pid int) {
	host.ActExec.Call(ctx, h, host.ExecRequest{Argv: []string{"kill", "-KILL", strconv.Itoa(pid)}}, nil, host.CallOpts{})
}

// sourceAddress is the address src reaches addr from: the only one a page
// server at addr admits.
func sourceAddress(ctx context.Context, src host.Host, addr string) (string, error) {
	var route host.RouteResult
	if err := host.ActRoute.Call(ctx, src, host.RouteRequest{To: addr}, &route, host.CallOpts{}); err != nil {
		return "", fmt.Errorf("find the address %s reaches %s from: %w", src.Name(), addr, err)
	}
	return route.IP, nil
}

// lazyShortfall says when a lazy dump wrote most of the memory in the
// freeze instead of leaving it to be fetched: CRIU leaves lazy only the
// private anonymous mappings that are not locked, and the pause then grows
// with what it wrote (the copy after the dump carries it).
func lazyShortfall(mode string, stats map[string]float64) string {
	written, lazy := stats["pages_written"], stats["pages_lazy"]
	if mode != "lazy" || written < 4096 || written < lazy {
		return ""
	}
	return fmt.Sprintf("the lazy dump wrote %.0f MiB in the freeze and left %.0f MiB to be fetched: CRIU fetches lazily only private anonymous memory that is not locked (mlock), "+
		"so shared or locked memory lengthens the pause; see the dump log", written*pageSize/(1<<20), lazy*pageSize/(1<<20))
}
