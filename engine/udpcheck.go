package engine

import (
	"bytes"
	"context"
	"net"
	"time"
)

// UDPCheck is a request/response exchange over UDP, for services such as a
// resolver (`udp { address = "…:53"  send = "…"  expect = "…" }`): Send
// goes in one datagram, sent again every udpResend, as a resolver does,
// until an answer that contains Expect (any answer, when Expect is empty)
// comes. A host with no socket on the port refuses the datagram (an ICMP
// port unreachable), which is an error.
type UDPCheck struct {
	Address string
	Send    string
	Expect  string
}

// udpResend is how long an exchange waits for an answer before it sends
// its datagram again.
const udpResend = 250 * time.Millisecond

// Dial checks the service from a new socket.
func (c UDPCheck) Dial(ctx context.Context, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", c.Address)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	return c.Exchange(conn, time.Now().Add(timeout))
}

// Exchange sends Send on conn, a connected UDP socket, until an answer
// comes, by deadline. A deadline that someone else sets on conn (a
// cancel) ends it too.
func (c UDPCheck) Exchange(conn net.Conn, deadline time.Time) (string, error) {
	buf := make([]byte, maxAnswer)
	for {
		if _, err := conn.Write([]byte(c.Send)); err != nil {
			return "", err
		}
		resend := time.Now().Add(udpResend)
		if resend.After(deadline) {
			resend = deadline
		}
		conn.SetReadDeadline(resend)
		for {
			n, err := conn.Read(buf)
			if err == nil {
				if c.Expect == "" || bytes.Contains(buf[:n], []byte(c.Expect)) {
					return quoteAnswer(buf[:n]), nil
				}
				continue // not the answer: one to a datagram sent before, say
			}
			now := time.Now()
			if !IsTimeout(err) || now.Before(resend) || !now.Before(deadline) {
				return "", err // refused, cancelled, or out of time
			}
			break
		}
	}
}
