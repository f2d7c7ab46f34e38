package criu

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	"golang.org/x/sys/unix"
)

// What a host does with new connections (SYNs) to a workload's ports while
// the workload is frozen or not yet restored: the workload block's
// `new_connections`.
const (
	// NewHold queues the SYNs (NFQUEUE) and lets them through once the
	// workload listens again, here or, re-sent, on the host the service
	// address moved to: clients see a slower connect.
	NewHold = "hold"
	// NewDrop drops them: clients retransmit their SYN after about a second.
	NewDrop = "drop"
	// NewReset answers them with a reset: clients fail at once.
	NewReset = "reset"
)

// How this host can queue packets for NFQUEUE from nftables.
const (
	QueueNative = "nft queue"                 // nft's queue expression (CONFIG_NFT_QUEUE)
	QueueXT     = "xt NFQUEUE via nft compat" // the xtables target through nft_compat
)

// QueueSupport finds out how this network namespace can queue packets, by
// adding a queue rule to a chain no hook reaches and removing it again.
// It returns "" with the reason when neither way works.
func QueueSupport() (string, error) {
	c, err := nftables.New()
	if err != nil {
		return "", err
	}
	t := &nftables.Table{Name: fmt.Sprintf("mig-probe-%d", os.Getpid()), Family: nftables.TableFamilyINet}
	defer func() {
		c.DelTable(t)
		c.Flush()
	}()
	c.AddTable(t)
	ch := c.AddChain(&nftables.Chain{Name: "probe", Table: t})
	if err := c.Flush(); err != nil {
		return "", fmt.Errorf("nftables: %w", err)
	}
	var errs []error
	for _, how := range []string{QueueNative, QueueXT} {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{queueExpr(how, 1)}})
		if err := c.Flush(); err == nil {
			return how, nil
		} else {
			errs = append(errs, fmt.Errorf("%s: %w", how, err))
		}
	}
	return "", errors.Join(errs...)
}

// queueExpr sends a packet to queue num, without bypass: with nobody
// reading the queue the packet is dropped, never let through.
func queueExpr(how string, num uint16) expr.Any {
	if how == QueueNative {
		return &expr.Queue{Num: num, Total: 1}
	}
	// struct xt_NFQ_info_v3 { u16 queuenum, queues_total, flags }, aligned to 8.
	info := xt.Unknown(make([]byte, 8))
	binary.NativeEndian.PutUint16(info[0:], num)
	binary.NativeEndian.PutUint16(info[2:], 1)
	return &expr.Target{Name: "NFQUEUE", Rev: 3, Info: &info}
}

// NewConnections settles what a host does with new connections: the
// workload's setting, or hold where the host can queue packets and drop
// where it cannot. It fails when the setting asks for hold there.
func NewConnections(setting string) (mode, how string, err error) {
	how, qerr := QueueSupport()
	switch setting {
	case "":
		if how != "" {
			return NewHold, how, nil
		}
		return NewDrop, "", nil
	case NewHold:
		if how == "" {
			return "", "", fmt.Errorf("new_connections = \"hold\": this host cannot queue packets (%v); set new_connections = \"drop\" or load nft_queue", qerr)
		}
		return NewHold, how, nil
	case NewDrop, NewReset:
		return setting, how, nil
	}
	return "", "", fmt.Errorf("new_connections %q: want \"hold\", \"drop\" or \"reset\"", setting)
}

// Conn is an established TCP connection of a workload, seen from its host.
type Conn struct {
	Local  netip.AddrPort `json:"local"`
	Remote netip.AddrPort `json:"remote"`
}

// Connections returns the established IPv4 TCP connections of a tree of
// processes whose local port is not one of ports, those of dual-stack
// sockets (IPv4-mapped) included.
func Connections(pids []int, ports []int) []Conn {
	if len(pids) == 0 {
		return nil
	}
	mine := map[string]bool{}
	for _, p := range pids {
		for ino := range socketInodes(p) {
			mine[ino] = true
		}
	}
	socks, _ := tcpSockets(pids[0], 1<<tcpEstablished)
	var out []Conn
	for _, s := range socks {
		if mine[s.Inode] && guardedConn(s.Local, ports) {
			out = append(out, Conn{Local: s.Local, Remote: s.Remote})
		}
	}
	return out
}

// guardedConn says whether a connection from local needs a rule of its
// own in the target's guard: one not on a listening port (whose rule
// covers it already).
func guardedConn(local netip.AddrPort, ports []int) bool {
	return !slices.Contains(ports, int(local.Port()))
}

// GuardSpec is what a guard keeps out of a workload's ports, in the
// network namespace it runs in, until it is released.
type GuardSpec struct {
	Table string `json:"table"` // "inet mig-guard-…"
	Ports []int  `json:"ports"` // the workload's listening ports
	// UDPPorts are the workload's UDP ports (its unconnected sockets'):
	// every datagram to them is held, or dropped, as a SYN to Ports is, so
	// that none is lost in a frozen socket (CRIU drops a UDP socket's
	// queue) or answered with an ICMP port unreachable, which a client's
	// connected socket reports as "connection refused".
	UDPPorts []int `json:"udp_ports,omitempty"`
	// NewConnections is NewHold, NewDrop or NewReset; Queue says how to
	// queue for NewHold (QueueNative or QueueXT).
	NewConnections string `json:"new_connections"`
	Queue          string `json:"queue,omitempty"`
	// Established drops every other packet to Ports and Conns: on the
	// target, until the restored workload owns its sockets, so that the
	// kernel answers none of them with a reset.
	Established bool   `json:"established,omitempty"`
	Conns       []Conn `json:"conns,omitempty"`
	// HoldEstablished, with NewHold, holds every packet to Ports and
	// Conns, not only the SYNs: on the target, the segments that reach it
	// before the restore then wait for the restored sockets instead of
	// being lost and sent again on the client's retransmission timer
	// (200 ms at least). Not for a source: there, a held handshake would
	// leave a half-open connection for the dump to lose; a source holds
	// its connections' segments only (HoldConns).
	HoldEstablished bool `json:"hold_established,omitempty"`
	// HoldConns, with NewHold, holds every packet of Conns, and only the
	// SYNs to Ports: on the source, the dump's lock of the workload's
	// connections (connlock.go). A held segment follows the address when
	// it moves, or reaches the resumed workload.
	HoldConns bool `json:"hold_conns,omitempty"`
	// Output drops what this host sends from Ports and Conns too (while a
	// restored copy is killed on undo: its sockets must not reset the
	// connections the source takes back).
	Output bool `json:"output,omitempty"`
	// Unarmed leaves the SYNs to Ports alone until arm adds their rule: a
	// source's guard starts before the dump, and new connections wait
	// only from the dump's lock on, while the workload cannot serve them.
	Unarmed bool `json:"unarmed,omitempty"`
	// Deadline bounds the guard's life, so that a lost run never leaves a
	// port blocked for long.
	Deadline time.Duration `json:"deadline"`
	// WatchPID, on the source, is the held workload's root: the guard
	// lets go by itself when it is gone, whoever killed it.
	WatchPID int `json:"watch_pid,omitempty"`
}

// DefaultGuardDeadline is a guard's life when the caller gives none.
const DefaultGuardDeadline = 10 * time.Minute

// rules adds the guard's chains and rules to table t, in the batch of
// c, without its queue rules (see install). In nft's words:
//
//	chain input { type filter hook input priority -10; policy accept;
//		tcp dport { PORTS } tcp flags & (syn | ack) == syn drop      (drop)
//		tcp dport { PORTS } tcp flags & (syn | ack) == syn reject with tcp reset  (reset)
//		tcp dport { PORTS } drop                                     (established, unless queued)
//		ip saddr . tcp sport . ip daddr . tcp dport { CONNS } drop   (established, unless queued)
//		udp dport { UDP } drop                                       (drop, reset)
//	}
//	chain prerouting { type filter hook prerouting priority -10; policy accept; }  (hold)
//	chain output { type filter hook output priority -10; policy accept;
//		tcp sport { PORTS } drop                                     (output)
//		ip saddr . tcp sport . ip daddr . tcp dport { CONNS } drop   (output, established)
//		udp sport { UDP } drop                                       (output)
//	}
//
// install then adds the queue rules to the prerouting chain, in the same
// batch (with HoldEstablished, they queue what established would drop):
//
//	tcp dport PORT tcp flags & (syn | ack) == syn queue          (hold)
//	tcp dport PORT queue                                         (hold, HoldEstablished: instead)
//	udp dport PORT queue                                         (hold)
//	ip saddr . tcp sport . ip daddr . tcp dport { CONNS } queue  (hold, HoldEstablished)
func (g GuardSpec) rules(c *nftables.Conn, t *nftables.Table) error {
	// A rule is built when it is added, after the chains, with its set
	// just before it: the order nft adds them in.
	type build func() ([]expr.Any, error)
	ports := func(off uint32, then ...expr.Any) build {
		return func() ([]expr.Any, error) {
			m, err := tcpPorts(c, t, off, g.Ports)
			return append(m, then...), err
		}
	}
	// drops drops the connections of lists, a rule per address family.
	drops := func(lists [][]fourTuple) []build {
		var bs []build
		for _, ts := range lists {
			bs = append(bs, func() ([]expr.Any, error) {
				m, err := tcpTuples(c, t, ts)
				return append(m, nftDrop), err
			})
		}
		return bs
	}
	var in, out []build
	if len(g.Ports) > 0 {
		if v := g.synVerdict(); v != nil && !g.Unarmed {
			in = append(in, ports(tcpDport, nftRule(isSYN, []expr.Any{v})...))
		}
		if g.Established && !g.queuesAll() {
			in = append(in, ports(tcpDport, nftDrop))
		}
		if g.Output {
			out = append(out, ports(tcpSport, nftDrop))
		}
	}
	if len(g.UDPPorts) > 0 {
		udp := func(off uint32) build {
			return func() ([]expr.Any, error) {
				m, err := udpPorts(c, t, off, g.UDPPorts)
				return append(m, nftDrop), err
			}
		}
		if g.dropsUDP() {
			in = append(in, udp(tcpDport))
		}
		if g.Output {
			out = append(out, udp(tcpSport))
		}
	}
	if g.Established && len(g.Conns) > 0 {
		to, err := g.tuples(false)
		if err != nil {
			return err
		}
		from, err := g.tuples(true)
		if err != nil {
			return err
		}
		if !g.queuesAll() {
			in = append(in, drops(to)...)
		}
		if g.Output {
			out = append(out, drops(from)...)
		}
	}
	input := nftBaseChain(c, t, "input", nftables.ChainHookInput, -10)
	if g.queues() {
		// SYNs are queued before routing, so that those that come while
		// the address leaves this host are held too (and re-sent).
		nftBaseChain(c, t, "prerouting", nftables.ChainHookPrerouting, -10)
	}
	var output *nftables.Chain
	if len(out) > 0 {
		output = nftBaseChain(c, t, "output", nftables.ChainHookOutput, -10)
	}
	for _, chain := range []struct {
		ch    *nftables.Chain
		rules []build
	}{{input, in}, {output, out}} {
		for _, b := range chain.rules {
			e, err := b()
			if err != nil {
				return err
			}
			c.AddRule(&nftables.Rule{Table: t, Chain: chain.ch, Exprs: e})
		}
	}
	return nil
}

// queues says whether the guard holds packets in a queue.
func (g GuardSpec) queues() bool {
	return g.NewConnections == NewHold && (len(g.Ports) > 0 || len(g.UDPPorts) > 0 || g.holdsConns() && len(g.Conns) > 0)
}

// dropsUDP says whether the input chain drops the datagrams to UDPPorts:
// when the guard does not hold them, from its arming on (a target's guard
// is armed from its start).
func (g GuardSpec) dropsUDP() bool {
	return len(g.UDPPorts) > 0 && g.NewConnections != NewHold && (!g.Unarmed || g.Established)
}

// holdsConns says whether the guard queues every packet of its Conns.
func (g GuardSpec) holdsConns() bool {
	return g.NewConnections == NewHold && (g.HoldEstablished || g.HoldConns)
}

// queuesAll says whether every packet that Established drops is queued
// before routing instead: the guard then needs no rule on input (and with
// no reader, the kernel drops what is queued).
func (g GuardSpec) queuesAll() bool {
	return g.queues() && g.HoldEstablished
}

// dropsInput says whether the table drops or rejects packets on input,
// where a packet the guard lets through would meet those rules.
func (g GuardSpec) dropsInput() bool {
	newRules := len(g.Ports) > 0 && (g.NewConnections == NewDrop || g.NewConnections == NewReset)
	return newRules || g.dropsUDP() || g.Established && !g.queuesAll() && (len(g.Ports) > 0 || len(g.Conns) > 0)
}

// tuples are the guard's connections as the packets to this host (or,
// with out, from it) carry them: the IPv4 ones, then the IPv6 ones, each
// family in a list of its own (one rule each), empty lists left out.
func (g GuardSpec) tuples(out bool) ([][]fourTuple, error) {
	var v4, v6 []fourTuple
	for _, cn := range g.Conns {
		l, r := cn.Local.Addr().Unmap(), cn.Remote.Addr().Unmap()
		if l.Is4() != r.Is4() {
			return nil, fmt.Errorf("connection %s-%s: mixed address families", cn.Local, cn.Remote)
		}
		t := fourTuple{saddr: r, sport: cn.Remote.Port(), daddr: l, dport: cn.Local.Port()}
		if out {
			t = fourTuple{saddr: l, sport: cn.Local.Port(), daddr: r, dport: cn.Remote.Port()}
		}
		if l.Is4() {
			v4 = append(v4, t)
		} else {
			v6 = append(v6, t)
		}
	}
	var lists [][]fourTuple
	for _, ts := range [][]fourTuple{v4, v6} {
		if len(ts) > 0 {
			lists = append(lists, ts)
		}
	}
	return lists, nil
}

// install creates the guard's table in this network namespace, in place of
// one an earlier guard left; with a queue, the SYNs to its ports (with
// HoldEstablished, every packet to its ports and connections) go to queue
// num before routing.
func (g GuardSpec) install(num uint16) error {
	family, _, ok := strings.Cut(g.Table, " ")
	if !ok || family != "inet" {
		return fmt.Errorf("guard table %q: want \"inet NAME\"", g.Table)
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("guard %s: nftables: %w", g.Table, err)
	}
	t, err := nftReplace(c, g.Table)
	if err == nil {
		err = g.rules(c, t)
	}
	if err == nil && g.queues() {
		err = g.queueRules(c, num)
	}
	if err != nil {
		return fmt.Errorf("guard %s: %w", g.Table, err)
	}
	if err := c.Flush(); err != nil {
		if g.queues() {
			return fmt.Errorf("guard %s (queueing with %s): %w", g.Table, g.Queue, err)
		}
		return fmt.Errorf("guard %s: %w", g.Table, err)
	}
	return nil
}

// queueRules adds the rules that queue packets to num to the prerouting
// chain of the guard's table, in the batch of c.
func (g GuardSpec) queueRules(c *nftables.Conn, num uint16) error {
	_, name, _ := strings.Cut(g.Table, " ")
	t := &nftables.Table{Name: name, Family: nftables.TableFamilyINet}
	ch := &nftables.Chain{Name: "prerouting", Table: t}
	if !g.Unarmed {
		g.queuePorts(c, ch, num)
	}
	if g.holdsConns() && len(g.Conns) > 0 {
		lists, err := g.tuples(false)
		if err != nil {
			return err
		}
		for _, ts := range lists {
			m, err := tcpTuples(c, t, ts)
			if err != nil {
				return err
			}
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: append(m, queueExpr(g.Queue, num))})
		}
	}
	return nil
}

// queuePorts adds to chain ch, in the batch of c, the rules that queue
// the SYNs to the guard's ports to num (with HoldEstablished, every
// packet to them).
func (g GuardSpec) queuePorts(c *nftables.Conn, ch *nftables.Chain, num uint16) {
	which := isSYN
	if g.HoldEstablished {
		which = nil
	}
	for _, p := range g.Ports {
		c.InsertRule(&nftables.Rule{Table: ch.Table, Chain: ch, Exprs: nftRule(isTCP, []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: tcpDport, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: nftPort(p)},
		}, which, []expr.Any{queueExpr(g.Queue, num)})})
	}
	for _, p := range g.UDPPorts {
		c.InsertRule(&nftables.Rule{Table: ch.Table, Chain: ch, Exprs: nftRule(isUDP, []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: tcpDport, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: nftPort(p)},
		}, []expr.Any{queueExpr(g.Queue, num)})})
	}
}

// synVerdict is what the input rule does with a SYN to the guard's ports:
// nil when the guard queues them instead.
func (g GuardSpec) synVerdict() expr.Any {
	switch g.NewConnections {
	case NewDrop:
		return nftDrop
	case NewReset:
		return nftTCPReset
	}
	return nil
}

// arm adds the SYN rules that an Unarmed guard lacks to its table, in
// the network namespace netns (nil: this one), for the guard pid, and
// records it.
func (g GuardSpec) arm(netns *os.File, pid int) error {
	if !g.Unarmed || len(g.Ports)+len(g.UDPPorts) == 0 {
		return nil
	}
	c, err := nftConn(netns)
	if err != nil {
		return err
	}
	_, name, _ := strings.Cut(g.Table, " ")
	t := &nftables.Table{Name: name, Family: nftables.TableFamilyINet}
	if v := g.synVerdict(); v != nil {
		input := &nftables.Chain{Name: "input", Table: t}
		if len(g.Ports) > 0 {
			m, err := tcpPorts(c, t, tcpDport, g.Ports)
			if err != nil {
				return err
			}
			c.InsertRule(&nftables.Rule{Table: t, Chain: input, Exprs: append(m, nftRule(isSYN, []expr.Any{v})...)})
		}
		if len(g.UDPPorts) > 0 {
			m, err := udpPorts(c, t, tcpDport, g.UDPPorts)
			if err != nil {
				return err
			}
			c.InsertRule(&nftables.Rule{Table: t, Chain: input, Exprs: append(m, nftDrop)})
		}
	} else if g.queues() {
		g.queuePorts(c, &nftables.Chain{Name: "prerouting", Table: t}, guardQueue(pid))
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("guard %s: hold new connections: %w", g.Table, err)
	}
	g.Unarmed = false
	g.record()
	return nil
}

// guardDir holds a pid file per running guard.
const guardDir = "/run/mig/guards"

func guardPIDFile(table string) string {
	return filepath.Join(guardDir, strings.ReplaceAll(table, " ", "-")+".pid")
}

// StartGuard starts a guard process for spec in the network namespace of
// nsPID (0: this one), detached from the caller (its own session), and
// returns once its table is in place. It replaces a guard of the same table.
func StartGuard(ctx context.Context, nsPID int, spec GuardSpec) (int, error) {
	if nsPID == 0 {
		if pid, ok := addConns(spec); ok {
			return pid, nil
		}
	}
	StopGuard(ctx, nsPID, spec.Table)
	netns := nsOf(nsPID, "net")
	if netns != nil {
		defer netns.Close()
	}
	if spec.Deadline <= 0 {
		spec.Deadline = DefaultGuardDeadline
	}
	exe, err := os.Executable()
	if err != nil {
		return 0, err
	}
	if err := os.MkdirAll(guardDir, 0o700); err != nil {
		return 0, err
	}
	logf, err := os.OpenFile(strings.TrimSuffix(guardPIDFile(spec.Table), ".pid")+".log", os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	cmd := exec.Command(exe, "agent", "guard")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Env = append(os.Environ(), "MIG_GUARD=1")
	b, _ := json.Marshal(spec)
	cmd.Stdin = bytes.NewReader(b)
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := startIn(netns, cmd); err != nil {
		return 0, fmt.Errorf("start guard %s: %w", spec.Table, err)
	}
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		ready <- strings.TrimSpace(line)
	}()
	go cmd.Wait() // reaps it if it ends while this process lives
	fail := func(err error) (int, error) {
		cmd.Process.Kill()
		dropNftTable(context.WithoutCancel(ctx), nsPID, spec.Table)
		log, _ := os.ReadFile(strings.TrimSuffix(guardPIDFile(spec.Table), ".pid") + ".log")
		return 0, fmt.Errorf("guard %s: %w: %s", spec.Table, err, strings.TrimSpace(string(log)))
	}
	select {
	case line := <-ready:
		if line != "ready" {
			return fail(errors.New("it did not start"))
		}
	case <-time.After(10 * time.Second):
		return fail(errors.New("not ready after 10s"))
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	pid := cmd.Process.Pid
	os.WriteFile(guardPIDFile(spec.Table), []byte(strconv.Itoa(pid)+"\n"), 0o600)
	spec.record()
	return pid, nil
}

// record writes the spec of the running guard of g.Table, for the calls
// that change or release it later.
func (g GuardSpec) record() {
	if b, err := json.Marshal(g); err == nil {
		os.WriteFile(guardSpecFile(g.Table), b, 0o600)
	}
}

func guardSpecFile(table string) string {
	return strings.TrimSuffix(guardPIDFile(table), ".pid") + ".json"
}

// guardQueue is the NFQUEUE number of the guard with pid.
func guardQueue(pid int) uint16 { return uint16(1000 + pid%30000) }

// addConns adds the connections of spec that the running guard of
// spec.Table lacks to its table, in place, when that guard runs in this
// network namespace with spec's other settings: restarting it would cost
// a process start, in the pause when the dump found new connections. It
// returns the guard's pid, and false when there is no such guard.
func addConns(spec GuardSpec) (int, bool) {
	pid, old, ok := runningGuard(spec.Table)
	if !ok {
		return 0, false
	}
	var add []Conn
	for _, c := range spec.Conns {
		if !slices.Contains(old.Conns, c) {
			add = append(add, c)
		}
	}
	same := old
	same.Conns, same.Deadline = spec.Conns, spec.Deadline
	if !sameSettings(same, spec) || spec.Output {
		return 0, false
	}
	if err := old.addConns(nil, pid, add); err != nil {
		return 0, false
	}
	return pid, true
}

// runningGuard returns the pid and spec of the guard of table, if it runs.
func runningGuard(table string) (int, GuardSpec, bool) {
	b, err := os.ReadFile(guardPIDFile(table))
	if err != nil {
		return 0, GuardSpec{}, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || !isGuard(pid) {
		return 0, GuardSpec{}, false
	}
	var spec GuardSpec
	if b, err := os.ReadFile(guardSpecFile(table)); err != nil || json.Unmarshal(b, &spec) != nil {
		return 0, GuardSpec{}, false
	}
	return pid, spec, true
}

// addConns adds conns to the table of g, the spec of the guard pid running
// in the network namespace netns (nil: this one), and records them.
func (g GuardSpec) addConns(netns *os.File, pid int, conns []Conn) error {
	if len(conns) == 0 {
		return nil
	}
	if err := g.insertConns(netns, conns, guardQueue(pid)); err != nil {
		return err
	}
	g.Conns = append(g.Conns, conns...)
	g.record()
	return nil
}

// sameSettings compares two specs, ports as sets.
func sameSettings(a, b GuardSpec) bool {
	pa, pb := slices.Sorted(slices.Values(a.Ports)), slices.Sorted(slices.Values(b.Ports))
	ua, ub := slices.Sorted(slices.Values(a.UDPPorts)), slices.Sorted(slices.Values(b.UDPPorts))
	a.Ports, b.Ports, a.UDPPorts, b.UDPPorts = nil, nil, nil, nil
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return slices.Equal(pa, pb) && slices.Equal(ua, ub) && bytes.Equal(ja, jb)
}

// insertConns adds to the table of g the rules that keep conns out, as
// rules and install would have: dropped on input, and, when g holds
// established packets, queued before routing to queue num. A hold guard
// (HoldConns: the dump's lock) also drops what the host sends on them, as
// CRIU's lock does: a retransmission by the held socket would carry a
// newer timestamp than the copy restored from the dump, and the peer would
// drop the copy's segments as old until its clock caught up (hundreds of
// milliseconds). The guard runs in the network namespace netns (nil: this
// one).
func (g GuardSpec) insertConns(netns *os.File, conns []Conn, num uint16) error {
	_, name, _ := strings.Cut(g.Table, " ")
	c, err := nftConn(netns)
	if err != nil {
		return err
	}
	add := g
	add.Conns = conns
	lists, err := add.tuples(false)
	if err != nil {
		return err
	}
	t := &nftables.Table{Name: name, Family: nftables.TableFamilyINet}
	if g.holdsConns() && len(g.Ports)+len(g.UDPPorts) == 0 && len(g.Conns) == 0 {
		// The guard queued nothing: it has no prerouting chain.
		return errors.New("no queue chain")
	}
	for _, ts := range lists {
		if g.Established && !g.queuesAll() {
			m, err := tcpTuples(c, t, ts)
			if err != nil {
				return err
			}
			c.AddRule(&nftables.Rule{Table: t, Chain: &nftables.Chain{Name: "input", Table: t}, Exprs: append(m, nftDrop)})
		}
		if g.holdsConns() {
			m, err := tcpTuples(c, t, ts)
			if err != nil {
				return err
			}
			c.AddRule(&nftables.Rule{Table: t, Chain: &nftables.Chain{Name: "prerouting", Table: t}, Exprs: append(m, queueExpr(g.Queue, num))})
		}
	}
	if g.HoldConns {
		sent, err := add.tuples(true)
		if err != nil {
			return err
		}
		output := nftBaseChain(c, t, "output", nftables.ChainHookOutput, -10)
		for _, ts := range sent {
			m, err := tcpTuples(c, t, ts)
			if err != nil {
				return err
			}
			c.AddRule(&nftables.Rule{Table: t, Chain: output, Exprs: append(m, nftDrop)})
		}
	}
	return c.Flush()
}

// startIn starts cmd in the network namespace netns (nil: the calling
// thread's). It is forked from a thread that has entered netns, so it
// lives there from its start, as under `nsenter --net`.
func startIn(netns *os.File, cmd *exec.Cmd) error {
	if netns == nil {
		return cmd.Start()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(netns.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		err = cmd.Start()
		// A thread that cannot go back stays locked: it ends with this
		// goroutine.
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// StopGuard releases the guard of table in the network namespace of nsPID
// (0: this one): held SYNs go to the local listener, or are re-sent where
// the address went, and the table is removed. A guard that is gone already
// leaves at most its table, which is removed too.
func StopGuard(ctx context.Context, nsPID int, table string) error {
	if table == "" {
		return nil
	}
	pidfile := guardPIDFile(table)
	killed := false
	if pid := SignalGuard(table); pid > 0 && waitGoneFast(ctx, pid, 5*time.Second) != nil {
		syscall.Kill(pid, syscall.SIGKILL)
		killed = true
	}
	if !killed {
		// A guard that had to be killed keeps its log, to say why.
		os.Remove(strings.TrimSuffix(pidfile, ".pid") + ".log")
	}
	os.Remove(pidfile)
	os.Remove(guardSpecFile(table))
	return dropNftTable(ctx, nsPID, table)
}

// SignalGuard tells the guard of table in this network namespace to
// release, without waiting for it: it lets the held packets through and
// removes its table on its own. A StopGuard later makes sure it did. It
// returns the guard's pid, 0 when none runs.
func SignalGuard(table string) int {
	b, err := os.ReadFile(guardPIDFile(table))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || !isGuard(pid) {
		return 0
	}
	syscall.Kill(pid, syscall.SIGUSR1)
	return pid
}

// isGuard says whether pid is a guard process.
func isGuard(pid int) bool {
	argv := cmdline(pid)
	return alive(pid) && len(argv) >= 2 && argv[len(argv)-2] == "agent" && argv[len(argv)-1] == "guard"
}

// waitAccepted waits, at most limit, until no connection to ports waits in
// a listen backlog or half-open (SYN_RECV) in the network namespace of
// pid (0: this one). It is called with new SYNs held, so no handshake
// starts meanwhile: the half-open ones are found once, in a walk of the
// established table, and then looked up one by one. A half-open
// connection has its listener's address family (an IPv4 client of a
// dual-stack listener is IPv6, mapped), so only the listeners' families
// are walked.
func waitAccepted(ctx context.Context, pid int, ports []int, limit time.Duration) {
	d, err := openDiag(pid)
	if err != nil {
		return
	}
	defer d.Close()
	listeners, err := d.list(1 << tcpListen) // the listeners' table only
	if err != nil {
		return
	}
	var families []uint8
	for _, l := range listeners {
		if slices.Contains(ports, int(l.Local.Port())) && !slices.Contains(families, l.family) {
			families = append(families, l.family)
		}
	}
	half, _ := d.listOf(1<<tcpSynRecv, families...)
	half, _ = pendingIn(half, ports)
	deadline := time.Now().Add(limit)
	for {
		// Read after the walk too: a handshake that ended during it is in
		// a backlog.
		if listeners, err = d.list(1 << tcpListen); err != nil {
			return
		}
		_, queued := pendingIn(listeners, ports)
		if len(half) == 0 && queued == 0 || !time.Now().Before(deadline) || ctx.Err() != nil {
			return
		}
		time.Sleep(500 * time.Microsecond)
		half = slices.DeleteFunc(half, func(s tcpSocket) bool {
			now, ok, err := d.find(s)
			return err == nil && (!ok || now.State != tcpSynRecv)
		})
	}
}

// waitRead waits, at most limit, until no datagram waits in the UDP
// sockets bound to ports (unconnected ones) in the network namespace of
// pid. It is called with new datagrams held: CRIU drops what a UDP
// socket's queue holds, so what came before the hold must be read first.
func waitRead(ctx context.Context, pid int, ports []int, limit time.Duration) {
	if len(ports) == 0 {
		return
	}
	d, err := openDiag(pid)
	if err != nil {
		return
	}
	defer d.Close()
	deadline := time.Now().Add(limit)
	for {
		socks, err := d.udp()
		if err != nil {
			return
		}
		waiting := slices.ContainsFunc(socks, func(s tcpSocket) bool {
			return s.RQueue > 0 && s.Remote.Port() == 0 && slices.Contains(ports, int(s.Local.Port()))
		})
		if !waiting || !time.Now().Before(deadline) || ctx.Err() != nil {
			return
		}
		time.Sleep(500 * time.Microsecond)
	}
}

// pendingIn finds, among socks, the half-open connections to ports and
// the number of connections in their listeners' accept queues.
func pendingIn(socks []tcpSocket, ports []int) (half []tcpSocket, queued int) {
	for _, s := range socks {
		switch {
		case !slices.Contains(ports, int(s.Local.Port())):
		case s.State == tcpSynRecv:
			half = append(half, s)
		case s.State == tcpListen:
			queued += int(s.RQueue)
		}
	}
	return half, queued
}

// waitGoneFast waits for pid to end, polling every millisecond: a guard's
// release is on the path of the clients it holds.
func waitGoneFast(ctx context.Context, pid int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for alive(pid) {
		if time.Now().After(deadline) {
			return fmt.Errorf("pid %d still alive after %s", pid, limit)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}
