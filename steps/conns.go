package steps

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/mig-project/mig/engine/host"
	"github.com/mig-project/mig/steps/criu"
)

// fixedAddrProblems finds the connections that CRIU could not restore on
// the target: those whose local end is the source host's own address,
// which never moves (the address mig reaches the host at, or the one it
// reaches the target from). Restoring one fails after the freeze ("Can't
// bind inet socket back"). Typical are a service's own outgoing
// connections (to a database, a cache, a replication primary), which the
// kernel opens from the host's address, not the service's.
func fixedAddrProblems(ctx context.Context, src host.Host, d dumpCfg, r criu.Resolved) ([]string, error) {
	conns := r.Conns
	if o, err := d.w.Options(); err != nil || !o.TCPEstablished {
		conns = nil
	}
	if len(conns)+len(r.Bound) == 0 || d.target == "" || d.target == d.w.host {
		return nil, nil
	}
	fixed := map[netip.Addr]string{}
	if a, err := netip.ParseAddr(hostAddress(d.w.hostV)); err == nil && !a.IsLoopback() {
		fixed[a.Unmap()] = "the address mig reaches it at"
	}
	// A target the source cannot resolve or route to by that address
	// (mig may reach it otherwise) leaves the address mig reaches the
	// source at.
	var route host.RouteResult
	if err := host.ActRoute.Call(ctx, src, host.RouteRequest{To: targetAddress(d)}, &route, host.CallOpts{}); err != nil {
		route.IP = ""
	}
	if a, err := netip.ParseAddr(route.IP); err == nil && !a.IsLoopback() {
		if _, ok := fixed[a.Unmap()]; !ok {
			fixed[a.Unmap()] = "the address it reaches host " + d.target + " from"
		}
	}
	var out []string
	for _, b := range r.Bound {
		if why, ok := fixed[b.Addr().Unmap()]; ok {
			out = append(out, fmt.Sprintf("%s listens on %s, host %s's own address (%s), which host %s does not get: "+
				"CRIU could not bind it there, and the restore would fail after the freeze. "+
				"Have the service listen on the service address that moves with it, or on all addresses (0.0.0.0 or ::)",
				d.w.String(), b, d.w.host, why, d.target))
		}
	}
	var order []netip.Addr
	byAddr := map[netip.Addr][]string{}
	for _, c := range conns {
		a := c.Local.Addr().Unmap()
		if _, ok := fixed[a]; !ok {
			continue
		}
		if byAddr[a] == nil {
			order = append(order, a)
		}
		byAddr[a] = append(byAddr[a], fmt.Sprintf("%s → %s", c.Local, c.Remote))
	}
	for _, a := range order {
		list := byAddr[a]
		what := "a TCP connection"
		if len(list) > 1 {
			what = fmt.Sprintf("%d TCP connections", len(list))
		}
		if len(list) > 3 {
			list = append(list[:3], "…")
		}
		out = append(out, fmt.Sprintf("%s has %s from %s (%s), host %s's own address (%s), which host %s does not get: "+
			"CRIU could not restore it there, and the restore would fail after the freeze. "+
			"Have the service open such connections from the service address that moves with it "+
			"(HAProxy's `source`, nginx's `proxy_bind`, a client library's local address), or have its clients connect to that address, "+
			"or close them before the move",
			d.w.String(), what, a, strings.Join(list, ", "), d.w.host, fixed[a], d.target))
	}
	return out, nil
}

// loopbackPeers finds the loopback connections whose other end is not in
// the workload: a service on the source (a local database, php-fpm behind
// nginx) that stays there. CRIU moves such a connection, but on the target
// nothing answers it, and the workload's next use of it fails.
func loopbackPeers(w string, conns []criu.Conn) []string {
	mine := map[netip.AddrPort]bool{}
	for _, c := range conns {
		mine[c.Local] = true
	}
	var out []string
	for _, c := range conns {
		if c.Local.Addr().IsLoopback() && !mine[c.Remote] {
			out = append(out, fmt.Sprintf("%s has a loopback connection %s → %s to a process that does not move with it: "+
				"on the target nothing answers it, and the workload's next use of it fails (a pool that reconnects recovers). "+
				"Move that process in the same tree or container, or have the workload connect after the move", w, c.Local, c.Remote))
		}
	}
	return out
}
