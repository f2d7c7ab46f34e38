package steps

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/zclconf/go-cty/cty"

	"github.com/mig-project/mig/engine/args"
	"github.com/mig-project/mig/engine/host"
	"github.com/mig-project/mig/steps/netaddr"
)

// MoveIP moves a service address from one host's interface to another's
// and announces it (gratuitous ARP; for IPv6, unsolicited neighbour
// advertisements), so that clients reach the target at once
// (tcp_established needs the same IP on the target):
//
//	step "move_ip" "vip" {
//	  address      = "10.77.0.100/24"
//	  from         = host.h1
//	  to           = host.h2
//	  interface    = "eth0"  # default eth0
//	  to_interface = "eth1"  # default: interface
//	  announce     = 3       # gratuitous ARPs, default 3
//	}
//
// Both hosts run the "net.addr" agent action. Undo moves the address back.
type MoveIP struct{}

// moveIPArgs are a move_ip step's arguments.
type moveIPArgs struct {
	Address     ipPrefix `arg:"address,required"`
	From        hostRef  `arg:"from,required"`
	To          hostRef  `arg:"to,required"`
	Interface   string   `arg:"interface" default:"eth0"`
	ToInterface string   `arg:"to_interface"`
	Announce    int      `arg:"announce" min:"0" max:"100"`
}

func (a *moveIPArgs) Check(cty.Value) hcl.Diagnostics {
	m := a.decode()
	if m.fromOK && m.toOK && m.from == m.to && m.fromIf == m.toIf {
		return hcl.Diagnostics{errDiag("Nothing to move", fmt.Sprintf("from and to are both %s:%s.", m.from, m.fromIf))}
	}
	return nil
}

func (MoveIP) Spec() hcldec.Spec { return args.Spec[moveIPArgs]() }

func (MoveIP) Outputs() cty.Type {
	return cty.Object(map[string]cty.Type{
		"address": cty.String,
		"from":    cty.String,
		"to":      cty.String,
		"seconds": cty.Number,
	})
}

const defaultAnnounce = 3

// moveIP is a decoded move_ip step.
type moveIP struct {
	address        string
	from, to       string
	fromIf, toIf   string
	announce       int
	fromOK, toOK   bool // host names are known
	addressChecked bool
}

// decodeMoveIP reads a move_ip step's arguments; the spec has checked them.
func decodeMoveIP(cfg cty.Value) (moveIP, hcl.Diagnostics) {
	a := moveIPArgs{Announce: defaultAnnounce}
	args.Decode(cfg, &a)
	return a.decode(), nil
}

func (a *moveIPArgs) decode() moveIP {
	m := moveIP{
		address:  string(a.Address),
		from:     a.From.Name(),
		to:       a.To.Name(),
		fromIf:   a.Interface,
		toIf:     a.ToInterface,
		announce: a.Announce,
	}
	if m.toIf == "" {
		m.toIf = m.fromIf
	}
	m.fromOK, m.toOK = m.from != "", m.to != ""
	m.addressChecked = m.address != ""
	return m
}

// Host is where the step runs: the host the address moves to.
func (MoveIP) Host(cfg cty.Value) string { return HostName(Attr(cfg, "to")) }

func (MoveIP) Plan(ctx context.Context, cfg cty.Value, env Env) (Preview, hcl.Diagnostics) {
	m, diags := decodeMoveIP(cfg)
	orUnknown := func(s string, ok bool) string {
		if !ok {
			return "(known after apply)"
		}
		return s
	}
	addr := m.address
	if !m.addressChecked {
		addr = "(known after apply)"
	}
	p := Preview{Notes: []string{fmt.Sprintf("move %s from %s:%s to %s:%s and announce it",
		addr, orUnknown(m.from, m.fromOK), m.fromIf, orUnknown(m.to, m.toOK), m.toIf)}}
	if m.addressChecked && m.fromOK && m.toOK {
		notes, pdiags := m.preflight(ctx, env)
		p.Notes = append(p.Notes, notes...)
		diags = append(diags, pdiags...)
	}
	return p, diags
}

// preflight asks both hosts, before anything is frozen (apply plans first),
// whether the address can leave the one and arrive on the other: a missing
// or down interface, or an address the removal would not find, would fail
// the step in the pause. What would fail is an error, what would work less
// well a warning, and a host that cannot be asked a note.
func (m moveIP) preflight(ctx context.Context, env Env) ([]string, hcl.Diagnostics) {
	var notes []string
	var diags hcl.Diagnostics
	for _, side := range []struct{ role, host, ifname string }{{"from", m.from, m.fromIf}, {"to", m.to, m.toIf}} {
		var res netaddr.CheckResult
		h, err := env.Hosts(side.host)
		if err == nil {
			req := netaddr.CheckRequest{Address: m.address, Interface: side.ifname, Role: side.role}
			err = netaddr.ActCheck.Call(ctx, h, req, &res, host.CallOpts{})
		}
		if err != nil {
			notes = append(notes, fmt.Sprintf("host %s: cannot check the address: %s", side.host, oneLine(err)))
			continue
		}
		for _, pr := range res.Problems {
			diags = append(diags, errDiag("Cannot move "+m.address, fmt.Sprintf("Host %s: %s.", side.host, pr)))
		}
		for _, w := range res.Warnings {
			diags = append(diags, warnDiag("Moving "+m.address, fmt.Sprintf("Host %s: %s.", side.host, w)))
		}
	}
	if len(notes) == 0 && len(diags) == 0 {
		notes = append(notes, fmt.Sprintf("%s is on %s:%s, and %s:%s is up to take it", m.address, m.from, m.fromIf, m.to, m.toIf))
	}
	return notes, diags
}

func (MoveIP) Apply(ctx context.Context, cfg cty.Value, env Env) (Result, error) {
	m, diags := decodeMoveIP(cfg)
	if diags.HasErrors() {
		return Result{}, diags
	}
	from, err := env.Hosts(m.from)
	if err != nil {
		return Result{}, fmt.Errorf("from: %w", err)
	}
	to, err := env.Hosts(m.to)
	if err != nil {
		return Result{}, fmt.Errorf("to: %w", err)
	}
	// Replayed by each host on its own: the target drops the address, the
	// source takes it back.
	replay := Replay{Undo: []host.Invocation{
		netaddr.Act.Invocation(to.Name(), netaddr.Request{Op: "del", Address: m.address, Interface: m.toIf}, ""),
		netaddr.Act.Invocation(from.Name(), netaddr.Request{Op: "add", Address: m.address, Interface: m.fromIf, Announce: m.announce}, ""),
	}}
	// Each host records its half of the undo in the same call that makes
	// the change, before making it.
	var holds [2]*host.HoldRef
	if env.Hold != nil {
		for i, h := range []host.Host{from, to} {
			var err error
			if holds[i], err = env.Hold(ctx, h.Name()); err != nil {
				return Result{}, fmt.Errorf("host %s cannot hold the address should mig die: %w", h.Name(), err)
			}
		}
	}
	start := time.Now()
	if err := m.move(ctx, env, from, m.fromIf, to, m.toIf, holds); err != nil {
		return Result{}, err
	}
	secs := time.Since(start).Seconds()
	return Result{
		Outputs: cty.ObjectVal(map[string]cty.Value{
			"address": cty.StringVal(m.address),
			"from":    cty.StringVal(from.Name()),
			"to":      cty.StringVal(to.Name()),
			"seconds": cty.NumberFloatVal(secs),
		}),
		Undo: func(ctx context.Context) error {
			return m.move(ctx, env, to, m.toIf, from, m.fromIf, [2]*host.HoldRef{})
		},
		Replay:  replay,
		Metrics: map[string]float64{"seconds": secs},
	}, nil
}

// move takes the address off src and puts it on dst. If dst refuses it,
// the address goes back on src, so it is never left on neither host.
//
// holds, when set, are the source's and the destination's leases: each
// host records there how to undo its half before it acts.
func (m moveIP) move(ctx context.Context, env Env, src host.Host, srcIf string, dst host.Host, dstIf string, holds [2]*host.HoldRef) error {
	var res netaddr.Result
	// Adding an address that is there and removing one that is not are
	// no-ops, and the results only feed logs: a call cut by a broken
	// connection is made again once the host is back (the undo's calls
	// always; the first move's only when no lease records them).
	again := host.CallOpts{Idempotent: true}
	first := host.CallOpts{Idempotent: holds[0] == nil && holds[1] == nil}
	back := netaddr.Request{Op: "add", Address: m.address, Interface: srcIf, Announce: m.announce}
	del := netaddr.Request{Op: "del", Address: m.address, Interface: srcIf, Hold: holds[0], Undo: &back}
	if err := netaddr.Act.Call(ctx, src, del, &res, first); err != nil {
		// The removal may have happened all the same (a cancel that
		// came while it ran): make sure the address is on the source.
		err = fmt.Errorf("remove %s from %s: %w", m.address, src.Name(), err)
		if berr := netaddr.Act.Call(context.WithoutCancel(ctx), src, back, nil, again); berr != nil {
			return errors.Join(err, fmt.Errorf("put %s back on %s: %w", m.address, src.Name(), berr))
		}
		return err
	}
	if !res.Present {
		env.Log.Warn("address was not on the source", "address", m.address, "host", src.Name(), "interface", srcIf)
	}
	add := netaddr.Request{Op: "add", Address: m.address, Interface: dstIf, Announce: m.announce, Hold: holds[1],
		Undo: &netaddr.Request{Op: "del", Address: m.address, Interface: dstIf}}
	if err := netaddr.Act.Call(ctx, dst, add, &res, first); err != nil {
		err = fmt.Errorf("add %s on %s: %w", m.address, dst.Name(), err)
		// The add may have happened all the same (a cancel that came
		// while it ran): the address must not stay on both hosts.
		undo := netaddr.Request{Op: "del", Address: m.address, Interface: dstIf}
		if derr := netaddr.Act.Call(context.WithoutCancel(ctx), dst, undo, nil, again); derr != nil {
			err = errors.Join(err, fmt.Errorf("remove %s from %s: %w", m.address, dst.Name(), derr))
		}
		if berr := netaddr.Act.Call(context.WithoutCancel(ctx), src, back, nil, again); berr != nil {
			return errors.Join(err, fmt.Errorf("put %s back on %s: %w", m.address, src.Name(), berr))
		}
		return err
	}
	env.Log.Info("address moved", "address", m.address, "from", src.Name(), "to", dst.Name(), "announced", res.Announced)
	return nil
}
