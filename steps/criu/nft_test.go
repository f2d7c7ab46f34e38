package criu

import (
	"context"
	"encoding/binary"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
)

// listRuleset is `nft --debug=netlink list ruleset` in n: the rules'
// bytecode and sets' elements, then the ruleset as nft reads it back.
func listRuleset(t *testing.T, n *testNetns) string {
	t.Helper()
	var out []byte
	var err error
	n.do(func() { out, err = exec.Command("nft", "--debug=netlink", "list", "ruleset").CombinedOutput() })
	if err != nil {
		t.Fatalf("nft list ruleset: %v: %s", err, out)
	}
	// A set's elements come in its hash's order: sort them.
	lines := strings.Split(string(out), "\n")
	for i := 0; i < len(lines); {
		j := i
		for j < len(lines) && strings.HasPrefix(lines[j], "\telement ") {
			j++
		}
		slices.Sort(lines[i:j])
		i = j + 1
	}
	return strings.Join(lines, "\n")
}

// nftScript loads script into n with the nft binary.
func nftScript(t *testing.T, n *testNetns, script string) {
	t.Helper()
	var out []byte
	var err error
	n.do(func() {
		cmd := exec.Command("nft", "-f", "-")
		cmd.Stdin = strings.NewReader(script)
		out, err = cmd.CombinedOutput()
	})
	if err != nil {
		t.Fatalf("nft -f: %v: %s\n%s", err, out, script)
	}
}

// TestGuardRulesAsNft: the tables mig builds over netlink are those nft
// builds from the scripts that say what they do (mig ran nft on these
// scripts before), rule for rule, down to the bytecode.
func TestGuardRulesAsNft(t *testing.T) {
	conns := []Conn{
		{Local: netip.MustParseAddrPort("10.0.0.2:8080"), Remote: netip.MustParseAddrPort("10.0.0.1:5555")},
		{Local: netip.MustParseAddrPort("10.0.0.2:8080"), Remote: netip.MustParseAddrPort("10.0.0.3:6")},
	}
	v6 := Conn{Local: netip.MustParseAddrPort("[fd00::2]:7000"), Remote: netip.MustParseAddrPort("[fd00::1]:443")}
	mapped := Conn{Local: netip.MustParseAddrPort("[::ffff:10.0.0.2]:7001"), Remote: netip.MustParseAddrPort("[::ffff:10.0.0.4]:80")}
	const head = "table inet mig-guard-t {\n\tchain input {\n\t\ttype filter hook input priority -10; policy accept;\n"
	cases := []struct {
		name   string
		spec   GuardSpec
		script string
	}{
		{"drop", GuardSpec{Ports: []int{8080, 9090}, NewConnections: NewDrop},
			head + "\t\ttcp dport { 8080, 9090 } tcp flags & (syn | ack) == syn drop\n\t}\n}\n"},
		{"reset", GuardSpec{Ports: []int{8080}, NewConnections: NewReset},
			head + "\t\ttcp dport { 8080 } tcp flags & (syn | ack) == syn reject with tcp reset\n\t}\n}\n"},
		{"hold", GuardSpec{Ports: []int{8080, 9090}, NewConnections: NewHold, Established: true},
			head + "\t\ttcp dport { 8080, 9090 } drop\n\t}\n" +
				"\tchain prerouting {\n\t\ttype filter hook prerouting priority -10; policy accept;\n\t}\n}\n"},
		{"established", GuardSpec{Ports: []int{8080, 9090}, NewConnections: NewDrop, Established: true, Conns: conns, Output: true},
			head + "\t\ttcp dport { 8080, 9090 } tcp flags & (syn | ack) == syn drop\n" +
				"\t\ttcp dport { 8080, 9090 } drop\n" +
				"\t\tip saddr . tcp sport . ip daddr . tcp dport { 10.0.0.1 . 5555 . 10.0.0.2 . 8080, 10.0.0.3 . 6 . 10.0.0.2 . 8080 } drop\n\t}\n" +
				"\tchain output {\n\t\ttype filter hook output priority -10; policy accept;\n" +
				"\t\ttcp sport { 8080, 9090 } drop\n" +
				"\t\tip saddr . tcp sport . ip daddr . tcp dport { 10.0.0.2 . 8080 . 10.0.0.1 . 5555, 10.0.0.2 . 8080 . 10.0.0.3 . 6 } drop\n\t}\n}\n"},
		// One rule per address family; a mapped IPv4 address is IPv4.
		{"both families", GuardSpec{Ports: []int{8080}, NewConnections: NewDrop, Established: true, Conns: []Conn{conns[0], v6, mapped}, Output: true},
			head + "\t\ttcp dport { 8080 } tcp flags & (syn | ack) == syn drop\n" +
				"\t\ttcp dport { 8080 } drop\n" +
				"\t\tip saddr . tcp sport . ip daddr . tcp dport { 10.0.0.1 . 5555 . 10.0.0.2 . 8080, 10.0.0.4 . 80 . 10.0.0.2 . 7001 } drop\n" +
				"\t\tip6 saddr . tcp sport . ip6 daddr . tcp dport { fd00::1 . 443 . fd00::2 . 7000 } drop\n\t}\n" +
				"\tchain output {\n\t\ttype filter hook output priority -10; policy accept;\n" +
				"\t\ttcp sport { 8080 } drop\n" +
				"\t\tip saddr . tcp sport . ip daddr . tcp dport { 10.0.0.2 . 8080 . 10.0.0.1 . 5555, 10.0.0.2 . 7001 . 10.0.0.4 . 80 } drop\n" +
				"\t\tip6 saddr . tcp sport . ip6 daddr . tcp dport { fd00::2 . 7000 . fd00::1 . 443 } drop\n\t}\n}\n"},
		// UDP datagrams are dropped (never rejected) where SYNs are not held.
		{"udp", GuardSpec{Ports: []int{8080}, UDPPorts: []int{53, 5353}, NewConnections: NewReset, Output: true},
			head + "\t\ttcp dport { 8080 } tcp flags & (syn | ack) == syn reject with tcp reset\n" +
				"\t\tudp dport { 53, 5353 } drop\n\t}\n" +
				"\tchain output {\n\t\ttype filter hook output priority -10; policy accept;\n" +
				"\t\ttcp sport { 8080 } drop\n\t\tudp sport { 53, 5353 } drop\n\t}\n}\n"},
		{"udp held", GuardSpec{UDPPorts: []int{53}, NewConnections: NewHold, Established: true},
			head + "\t}\n" +
				"\tchain prerouting {\n\t\ttype filter hook prerouting priority -10; policy accept;\n\t}\n}\n"},
		{"conns only", GuardSpec{NewConnections: NewHold, Established: true, Conns: conns[:1]},
			head + "\t\tip saddr . tcp sport . ip daddr . tcp dport { 10.0.0.1 . 5555 . 10.0.0.2 . 8080 } drop\n\t}\n}\n"},
		// What established would drop is queued (by install): the packets
		// the guard lets through meet no rule.
		{"hold established", GuardSpec{Ports: []int{8080}, NewConnections: NewHold, Established: true, HoldEstablished: true, Conns: conns[:1]},
			head + "\t}\n" +
				"\tchain prerouting {\n\t\ttype filter hook prerouting priority -10; policy accept;\n\t}\n}\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want, got := newTestNetns(t), newTestNetns(t)
			nftScript(t, want, tc.script)
			tc.spec.Table = "inet mig-guard-t"
			var err error
			got.do(func() {
				var c *nftables.Conn
				if c, err = nftables.New(); err != nil {
					return
				}
				tbl, _ := nftReplace(c, tc.spec.Table)
				if err = tc.spec.rules(c, tbl); err == nil {
					err = c.Flush()
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			if w, g := listRuleset(t, want), listRuleset(t, got); w != g {
				t.Errorf("nft made:\n%s\nmig made:\n%s", w, g)
			}
			input, _, _ := strings.Cut(strings.TrimPrefix(tc.script, head), "\t}")
			if drops := input != ""; tc.spec.dropsInput() != drops {
				t.Errorf("dropsInput() = %v, but the input chain has rules: %v", !drops, drops)
			}
		})
	}
}

// TestPageServerGuardAsNft: the page server's port guard, for an IPv4 and
// an IPv6 peer, is the table nft builds from its script.
func TestPageServerGuardAsNft(t *testing.T) {
	for _, tc := range []struct{ from, script string }{
		{"10.1.2.3", "table inet mig-ps-7000 {\n\tchain input {\n\t\ttype filter hook input priority -20; policy accept;\n" +
			"\t\ttcp dport 7000 ip saddr != 10.1.2.3 reject with tcp reset\n\t\ttcp dport 7000 meta nfproto ipv6 reject with tcp reset\n\t}\n}\n"},
		{"fd00::1", "table inet mig-ps-7000 {\n\tchain input {\n\t\ttype filter hook input priority -20; policy accept;\n" +
			"\t\ttcp dport 7000 ip6 saddr != fd00::1 reject with tcp reset\n\t\ttcp dport 7000 meta nfproto ipv4 reject with tcp reset\n\t}\n}\n"},
	} {
		want, got := newTestNetns(t), newTestNetns(t)
		nftScript(t, want, tc.script)
		var err error
		got.do(func() {
			// Twice: the second replaces the first.
			if err = guardPort(context.Background(), 7000, tc.from); err == nil {
				err = guardPort(context.Background(), 7000, tc.from)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		if w, g := listRuleset(t, want), listRuleset(t, got); w != g {
			t.Errorf("from %s: nft made:\n%s\nmig made:\n%s", tc.from, w, g)
		}
		got.do(func() { err = unguardPort(context.Background(), 7000) })
		if err != nil || listRuleset(t, got) != "" {
			t.Errorf("unguardPort: %v; left:\n%s", err, listRuleset(t, got))
		}
	}
}

// TestNetlinkMessages: a datagram's last message may end unpadded.
func TestNetlinkMessages(t *testing.T) {
	msg := func(typ uint16, data string) []byte {
		b := binary.NativeEndian.AppendUint32(nil, uint32(16+len(data)))
		b = binary.NativeEndian.AppendUint16(b, typ)
		b = append(b, make([]byte, 10)...)
		return append(b, data...)
	}
	b := append(msg(1, "abcdefg"), 0) // padded to 4 bytes
	b = append(b, msg(2, "xyz")...)   // not padded
	got := netlinkMessages(b)
	if len(got) != 2 || string(got[0].Data) != "abcdefg" || got[1].Header.Type != 2 || string(got[1].Data) != "xyz" {
		t.Fatalf("got %+v", got)
	}
	if got := netlinkMessages(b[:len(b)-1]); len(got) != 1 {
		t.Errorf("a cut message: got %d messages, want 1", len(got))
	}
}
