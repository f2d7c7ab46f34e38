package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"
)

// TCPCheck is a request/response exchange over TCP, for services that do
// not speak HTTP (`tcp { address = "…:6379"  send = "PING\r\n"  expect = "+PONG" }`).
// With Send empty nothing is written; with Expect empty any answer (or,
// with Send empty too, the connect alone) passes.
type TCPCheck struct {
	Address string
	Send    string
	Expect  string
}

// maxAnswer bounds what an exchange reads while looking for Expect.
const maxAnswer = 64 << 10

// Dial checks the service on a new connection.
func (c TCPCheck) Dial(ctx context.Context, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	d := net.Dialer{}
	conn, err := d.DialContext(ctx, "tcp", c.Address)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if c.Send == "" && c.Expect == "" {
		return "connected", nil
	}
	return c.Exchange(conn)
}

// Exchange sends Send on conn and reads until Expect arrived. The caller
// sets conn's deadline. It returns what it read (quoted and shortened).
func (c TCPCheck) Exchange(conn net.Conn) (string, error) {
	if c.Send != "" {
		if _, err := conn.Write([]byte(c.Send)); err != nil {
			return "", err
		}
	}
	var got []byte
	buf := make([]byte, 4096)
	for {
		n, err := conn.Read(buf)
		got = append(got, buf[:n]...)
		if c.Expect == "" && len(got) > 0 {
			return quoteAnswer(got), nil
		}
		if c.Expect != "" && bytes.Contains(got, []byte(c.Expect)) {
			return quoteAnswer(got), nil
		}
		if err != nil {
			if len(got) > 0 {
				return quoteAnswer(got), fmt.Errorf("%w after %s", err, quoteAnswer(got))
			}
			return "", err
		}
		if len(got) >= maxAnswer {
			return quoteAnswer(got), fmt.Errorf("answer without %q in its first %d bytes", c.Expect, len(got))
		}
	}
}

func quoteAnswer(b []byte) string {
	if len(b) > 80 {
		return strconv.Quote(string(b[:80])) + "…"
	}
	return strconv.Quote(string(b))
}

// IsTimeout says whether err is a deadline expiring.
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
