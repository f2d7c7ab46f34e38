package criu

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// mig speaks to nftables over netlink, in-process: nothing here runs the
// nft binary. A table is named as nft prints it, "FAMILY NAME"
// ("inet mig-guard-web").

// lockTable finds the table CRIU's nftables network lock created for the
// dump whose log is logPath, in pid's network namespace. CRIU names it
// after the first characters of its run id ("inet CRIU-932449b8-cc88-…").
func lockTable(_ context.Context, pid int, logPath string) string {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return ""
	}
	// swrk logs its own run id first, then the worker's.
	ids := runID.FindAllSubmatch(b, -1)
	if len(ids) == 0 {
		return ""
	}
	netns := nsOf(pid, "net")
	if netns != nil {
		defer netns.Close()
	}
	tables, err := NftTables(netns)
	if err != nil {
		return ""
	}
	for i := len(ids) - 1; i >= 0; i-- {
		if locks := LockTables(tables, string(ids[i][1])); len(locks) > 0 {
			return locks[0]
		}
	}
	return ""
}

// LockTables picks CRIU's network locks out of tables ("FAMILY NAME"):
// with runID, the one of the CRIU run with that id, which names its table
// "CRIU-" and a prefix of the id; else every one.
func LockTables(tables []string, runID string) []string {
	var out []string
	for _, t := range tables {
		_, name, _ := strings.Cut(t, " ")
		if len(name) <= len("CRIU-") || !strings.HasPrefix(name, "CRIU-") {
			continue
		}
		if runID != "" && !strings.HasPrefix("CRIU-"+runID, name) {
			continue
		}
		out = append(out, t)
	}
	return out
}

var runID = regexp.MustCompile(`CRIU run id = ([0-9a-f-]+)`)

// nsOf opens pid's namespace of the given type, or returns nil when pid is
// in the same one as mig (or gone).
func nsOf(pid int, typ string) *os.File {
	if pid <= 0 {
		return nil
	}
	theirs, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, typ))
	if err != nil {
		return nil
	}
	ours, _ := os.Readlink("/proc/self/ns/" + typ)
	if theirs == ours {
		return nil
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/%s", pid, typ))
	if err != nil {
		return nil
	}
	return f
}

// nftConn connects to nftables in the network namespace netns (nil: the
// calling thread's).
func nftConn(netns *os.File) (*nftables.Conn, error) {
	if netns == nil {
		return nftables.New()
	}
	return nftables.New(nftables.WithNetNSFd(int(netns.Fd())))
}

// nftFamilies are the table families by nft's names for them.
var nftFamilies = map[string]nftables.TableFamily{
	"ip":     nftables.TableFamilyIPv4,
	"ip6":    nftables.TableFamilyIPv6,
	"inet":   nftables.TableFamilyINet,
	"arp":    nftables.TableFamilyARP,
	"bridge": nftables.TableFamilyBridge,
	"netdev": nftables.TableFamilyNetdev,
}

// nftTable parses a table's "FAMILY NAME".
func nftTable(table string) (*nftables.Table, error) {
	f := strings.Fields(table)
	if len(f) != 2 {
		return nil, fmt.Errorf("nftables table %q: want \"FAMILY NAME\"", table)
	}
	family, ok := nftFamilies[f[0]]
	if !ok {
		return nil, fmt.Errorf("nftables table %q: unknown family %q", table, f[0])
	}
	return &nftables.Table{Name: f[1], Family: family}, nil
}

// hasLockTable says whether the network namespace netns (nil: this one)
// holds a CRIU network lock, or may (its tables cannot be listed).
func hasLockTable(netns *os.File) bool {
	tables, err := NftTables(netns)
	return err != nil || len(LockTables(tables, "")) > 0
}

// NftTables lists the tables of the network namespace netns (nil: this
// one) as "FAMILY NAME".
func NftTables(netns *os.File) ([]string, error) {
	c, err := nftConn(netns)
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	tables, err := c.ListTables()
	if err != nil {
		return nil, fmt.Errorf("nftables: list tables: %w", err)
	}
	var out []string
	for _, t := range tables {
		for name, f := range nftFamilies {
			if f == t.Family {
				out = append(out, name+" "+t.Name)
			}
		}
	}
	return out, nil
}

// DeleteNftTable removes table from the network namespace netns (nil:
// this one). A table that is not there is not an error.
func DeleteNftTable(netns *os.File, table string) error {
	return changeNftTable(netns, table, "delete", func(c *nftables.Conn, t *nftables.Table) { c.DelTable(t) })
}

// FlushNftTable removes the rules of table in netns (nil: this one),
// keeping its chains. Deleting a base chain unregisters its hook, and the
// kernel then drops every packet queued (NFQUEUE) in the namespace, a
// guard's held SYNs included: a lock that goes while a guard holds packets
// is flushed first, and deleted once the guard let them through.
func FlushNftTable(netns *os.File, table string) error {
	return changeNftTable(netns, table, "flush", func(c *nftables.Conn, t *nftables.Table) { c.FlushTable(t) })
}

// changeNftTable applies change to table in netns, if the table exists.
func changeNftTable(netns *os.File, table, what string, change func(*nftables.Conn, *nftables.Table)) error {
	t, err := nftTable(table)
	if err != nil {
		return err
	}
	c, err := nftConn(netns)
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	if _, err := c.ListTableOfFamily(t.Name, t.Family); err != nil {
		return nil // no such table
	}
	change(c, t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("%s table %s: %w", what, table, err)
	}
	return nil
}

// dropNftTable removes a network lock table from pid's network namespace.
func dropNftTable(ctx context.Context, pid int, table string) error {
	netns := nsOf(pid, "net")
	if netns != nil {
		defer netns.Close()
	}
	return dropNftTableIn(ctx, netns, table)
}

// dropNftTableIn removes table from the network namespace netns (nil: this
// one) if it exists.
func dropNftTableIn(_ context.Context, netns *os.File, table string) error {
	if table == "" {
		return nil
	}
	if err := DeleteNftTable(netns, table); err != nil {
		return fmt.Errorf("remove network lock %q: %w", table, err)
	}
	return nil
}

// nftTableExists says whether table exists in this network namespace.
func nftTableExists(_ context.Context, table string) bool {
	t, err := nftTable(table)
	if err != nil {
		return false
	}
	c, err := nftConn(nil)
	if err != nil {
		return false
	}
	_, err = c.ListTableOfFamily(t.Name, t.Family)
	return err == nil
}

// HoldPorts starts a guard in the network namespace of pid that holds,
// drops or refuses new TCP connections to ports (the workload's
// new_connections setting) until StopGuard. A frozen server's kernel would
// otherwise accept them into the listen backlog, and they would be lost
// with the dump (CRIU skips in-flight connections). Held SYNs go to the
// resumed listener, or follow the service address when it moves. The
// connections' segments are held too, but only from the dump's lock on,
// just before the freeze (connlock.go): held from here, a download's
// acknowledgements would fill the queue while the workload still runs. A
// full queue drops what does not fit; the peers send it again.
func HoldPorts(ctx context.Context, pid int, ports, udp []int, setting string) (string, error) {
	table, err := startHold(ctx, pid, ports, udp, setting, false)
	if err != nil || table == "" {
		return table, err
	}
	waitAccepted(ctx, pid, ports, acceptWait)
	waitRead(ctx, pid, udp, acceptWait)
	return table, nil
}

// acceptWait bounds the wait for the listeners to accept what came before
// the hold.
const acceptWait = 250 * time.Millisecond

// startHold starts the guard of HoldPorts; unarmed, it lets new
// connections through until armHold.
func startHold(ctx context.Context, pid int, ports, udp []int, setting string, unarmed bool) (string, error) {
	if len(ports)+len(udp) == 0 {
		return "", nil
	}
	mode, how, err := NewConnections(setting)
	if err != nil {
		return "", err
	}
	spec := GuardSpec{Table: holdTable(pid), Ports: ports, UDPPorts: udp, NewConnections: mode, Queue: how, WatchPID: pid, HoldConns: mode == NewHold, Unarmed: unarmed}
	if _, err := StartGuard(ctx, pid, spec); err != nil {
		return "", fmt.Errorf("%s new connections to ports %v: %w", mode, ports, err)
	}
	return spec.Table, nil
}

// armHold has the guard of table, started by startHold, hold new
// connections to ports from now on, in the network namespace of pid, and
// then waits for the listeners to accept those that came before:
// connections whose handshake ended before the hold are in the listen
// backlog, where the dump would lose them.
func armHold(ctx context.Context, pid int, ports []int, table string) error {
	if table == "" {
		return nil
	}
	guard, spec, ok := runningGuard(table)
	if !ok {
		return fmt.Errorf("guard %s is not running", table)
	}
	if spec.Unarmed {
		netns := nsOf(pid, "net")
		err := spec.arm(netns, guard)
		if netns != nil {
			netns.Close()
		}
		if err != nil {
			return err
		}
	}
	waitAccepted(ctx, pid, ports, acceptWait)
	waitRead(ctx, pid, spec.UDPPorts, acceptWait)
	return nil
}

// GuardTable names the guard a target keeps for workload w until its
// restore ends.
func GuardTable(w Workload) string {
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, w.Kind+"-"+w.Name)
	return "inet mig-guard-" + name
}

// holdTable names the table HoldPorts makes for pid.
func holdTable(pid int) string { return fmt.Sprintf("inet mig-hold-%d", pid) }

// ListenPorts returns the TCP ports a tree of processes listens on.
func ListenPorts(pids []int) []int { return listenPorts(pids) }

// UDPPorts returns the ports of the unconnected UDP sockets of pids.
func UDPPorts(pids []int) []int { return udpServerPorts(pids) }

// nftReplace starts a batch on c that replaces table with an empty one:
// the table is added, deleted and added again, so that one left by a dead
// run goes, in the same transaction as the rules that follow.
func nftReplace(c *nftables.Conn, table string) (*nftables.Table, error) {
	t, err := nftTable(table)
	if err != nil {
		return nil, err
	}
	c.AddTable(t)
	c.DelTable(t)
	return c.AddTable(t), nil
}

// nftBaseChain adds a filter chain on hook at priority, with policy
// accept.
func nftBaseChain(c *nftables.Conn, t *nftables.Table, name string, hook *nftables.ChainHook, priority nftables.ChainPriority) *nftables.Chain {
	accept := nftables.ChainPolicyAccept
	return c.AddChain(&nftables.Chain{Name: name, Table: t, Type: nftables.ChainTypeFilter, Hooknum: hook,
		Priority: nftables.ChainPriorityRef(priority), Policy: &accept})
}

// Offsets in the TCP header, and its SYN and ACK flags.
const (
	tcpSport = 0
	tcpDport = 2
	tcpFlags = 13
	tcpSyn   = 0x02
	tcpAck   = 0x10
)

// Rule expressions, as nft compiles them for an inet table.
var (
	// isTCP: meta l4proto tcp.
	isTCP = []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
	}
	// isUDP: meta l4proto udp.
	isUDP = []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
	}
	// isSYN: tcp flags & (syn | ack) == syn.
	isSYN = []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: tcpFlags, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{tcpSyn | tcpAck}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{tcpSyn}},
	}
	nftDrop     = &expr.Verdict{Kind: expr.VerdictDrop}
	nftTCPReset = &expr.Reject{Type: unix.NFT_REJECT_TCP_RST}
	nfprotoV4   = nfproto(unix.NFPROTO_IPV4)
	nfprotoV6   = nfproto(unix.NFPROTO_IPV6)
)

// nfproto: meta nfproto is proto.
func nfproto(proto byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
}

// nftPort is a TCP port in network order.
func nftPort(p int) []byte { return binary.BigEndian.AppendUint16(nil, uint16(p)) }

// tcpPorts matches TCP packets whose port at off (tcpSport or tcpDport)
// is one of ports: a compare for one port, an anonymous set for more, as
// nft does for "tcp dport { … }".
func tcpPorts(c *nftables.Conn, t *nftables.Table, off uint32, ports []int) ([]expr.Any, error) {
	return l4Ports(c, t, isTCP, off, ports)
}

// udpPorts is tcpPorts for UDP datagrams ("udp dport { … }"): UDP's ports
// sit where TCP's do.
func udpPorts(c *nftables.Conn, t *nftables.Table, off uint32, ports []int) ([]expr.Any, error) {
	return l4Ports(c, t, isUDP, off, ports)
}

func l4Ports(c *nftables.Conn, t *nftables.Table, proto []expr.Any, off uint32, ports []int) ([]expr.Any, error) {
	e := append(append([]expr.Any{}, proto...),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: 2})
	if len(ports) == 1 {
		return append(e, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: nftPort(ports[0])}), nil
	}
	set := &nftables.Set{Table: t, Anonymous: true, Constant: true, KeyType: nftables.TypeInetService}
	elems := make([]nftables.SetElement, len(ports))
	for i, p := range ports {
		elems[i] = nftables.SetElement{Key: nftPort(p)}
	}
	if err := c.AddSet(set, elems); err != nil {
		return nil, err
	}
	return append(e, &expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID}), nil
}

// fourTuple is a TCP connection as a packet carries it: both addresses
// IPv4, or both IPv6.
type fourTuple struct {
	saddr, daddr netip.Addr
	sport, dport uint16
}

// tcpTuples matches TCP packets of the given connections, all of one
// family: nft's "ip saddr . tcp sport . ip daddr . tcp dport { … }" (ip6
// for IPv6), whose fields sit in 32-bit registers from 8 (the first of
// them, alias of register 1) on.
func tcpTuples(c *nftables.Conn, t *nftables.Table, tuples []fourTuple) ([]expr.Any, error) {
	addrType, family, size, src, dst := nftables.TypeIPAddr, nfprotoV4, uint32(4), uint32(12), uint32(16)
	if len(tuples) > 0 && tuples[0].saddr.Is6() {
		addrType, family, size, src, dst = nftables.TypeIP6Addr, nfprotoV6, 16, 8, 24
	}
	key, err := nftables.ConcatSetType(addrType, nftables.TypeInetService, addrType, nftables.TypeInetService)
	if err != nil {
		return nil, err
	}
	set := &nftables.Set{Table: t, Anonymous: true, Constant: true, Concatenation: true, KeyType: key}
	elems := make([]nftables.SetElement, len(tuples))
	for i, u := range tuples {
		if u.saddr.BitLen() != int(size)*8 || u.daddr.BitLen() != int(size)*8 {
			return nil, fmt.Errorf("connection %s:%d-%s:%d: mixed address families", u.saddr, u.sport, u.daddr, u.dport)
		}
		k := make([]byte, 2*size+8)
		copy(k, u.saddr.AsSlice())
		binary.BigEndian.PutUint16(k[size:], u.sport)
		copy(k[size+4:], u.daddr.AsSlice())
		binary.BigEndian.PutUint16(k[2*size+4:], u.dport)
		elems[i] = nftables.SetElement{Key: k}
	}
	if err := c.AddSet(set, elems); err != nil {
		return nil, err
	}
	words := size / 4 // registers an address fills
	e := append(append([]expr.Any{}, family...), isTCP...)
	return append(e,
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: src, Len: size},
		&expr.Payload{DestRegister: 8 + words, Base: expr.PayloadBaseTransportHeader, Offset: tcpSport, Len: 2},
		&expr.Payload{DestRegister: 9 + words, Base: expr.PayloadBaseNetworkHeader, Offset: dst, Len: size},
		&expr.Payload{DestRegister: 9 + 2*words, Base: expr.PayloadBaseTransportHeader, Offset: tcpDport, Len: 2},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
	), nil
}

// nftRule joins expression lists into one rule's.
func nftRule(parts ...[]expr.Any) []expr.Any {
	var e []expr.Any
	for _, p := range parts {
		e = append(e, p...)
	}
	return e
}
