// Package nettest holds small network services for tests.
package nettest

import "net"

// AnswerUDP answers every datagram on c that reads ask with reply, until c
// is closed.
func AnswerUDP(c *net.UDPConn, ask, reply string) {
	buf := make([]byte, 64)
	for {
		n, from, err := c.ReadFromUDP(buf)
		if err != nil {
			return
		}
		if string(buf[:n]) == ask {
			c.WriteToUDP([]byte(reply), from)
		}
	}
}
