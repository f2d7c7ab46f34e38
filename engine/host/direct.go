package host

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"syscall"
	"time"
)

// A direct transfer skips the relay through mig: the destination's agent
// listens on a TCP port with TLS 1.3 and a one-time self-signed
// certificate, and sends mig a ticket (port, certificate fingerprint,
// one-time token) on its output stream. mig hands the ticket to the
// source's agent over its SSH session; the source connects, pins the
// certificate, sends the token, then the usual transfer stream. The
// listener binds the address the source was told to reach (every
// interface only when this host does not own it), takes one connection
// and closes.

// ticket is what a direct receiver announces.
type ticket struct {
	Port        string `json:"port"`
	Fingerprint string `json:"fingerprint"` // sha256 of the certificate, hex
	Token       string `json:"token"`
}

const directTimeout = 30 * time.Second

// listenDirect starts a one-connection TLS listener on addr, writes the
// ticket to out, and returns the authenticated connection.
func listenDirect(ctx context.Context, addr string, out io.Writer) (net.Conn, error) {
	cert, fp, err := oneTimeCert()
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", addr)
	if errors.Is(err, syscall.EADDRNOTAVAIL) {
		// The source reaches this host at an address it does not own
		// (NAT): take the connection on every interface.
		_, port, _ := net.SplitHostPort(addr)
		l, err = net.Listen("tcp", ":"+port)
	}
	if err != nil {
		return nil, fmt.Errorf("direct transfer: listen: %w", err)
	}
	defer l.Close()
	tl := l.(*net.TCPListener)
	tl.SetDeadline(time.Now().Add(directTimeout))
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()

	tok := make([]byte, 32)
	rand.Read(tok)
	_, port, _ := net.SplitHostPort(l.Addr().String())
	t := ticket{Port: port, Fingerprint: fp, Token: hex.EncodeToString(tok)}
	b, _ := json.Marshal(t)
	if _, err := out.Write(append(b, '\n')); err != nil {
		return nil, err
	}
	raw, err := tl.Accept()
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("direct transfer: no connection from the source: %w", err)
	}
	conn := tls.Server(raw, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
	conn.SetDeadline(time.Now().Add(directTimeout))
	got := make([]byte, len(t.Token)+1)
	if _, err := io.ReadFull(conn, got); err != nil {
		conn.Close()
		return nil, fmt.Errorf("direct transfer: read token: %w", err)
	}
	if subtle.ConstantTimeCompare(got, []byte(t.Token+"\n")) != 1 {
		conn.Close()
		return nil, fmt.Errorf("direct transfer: %s sent a wrong token", raw.RemoteAddr())
	}
	conn.SetDeadline(time.Time{})
	return conn, nil
}

// dialDirect connects to a direct receiver and authenticates both ways.
func dialDirect(ctx context.Context, addr string, t ticket) (*tls.Conn, error) {
	d := tls.Dialer{
		NetDialer: &net.Dialer{Timeout: 10 * time.Second},
		Config: &tls.Config{
			MinVersion: tls.VersionTLS13,
			// The certificate is self-signed and pinned by its fingerprint.
			InsecureSkipVerify: true,
			VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
				if len(raw) == 0 {
					return errors.New("no certificate")
				}
				sum := sha256.Sum256(raw[0])
				if subtle.ConstantTimeCompare([]byte(hex.EncodeToString(sum[:])), []byte(t.Fingerprint)) != 1 {
					return errors.New("the receiver's certificate does not match its ticket")
				}
				return nil
			},
		},
	}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("direct transfer: connect to %s: %w", addr, err)
	}
	conn := c.(*tls.Conn)
	if _, err := io.WriteString(conn, t.Token+"\n"); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

func oneTimeCert() (tls.Certificate, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	sum := sha256.Sum256(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, hex.EncodeToString(sum[:]), nil
}

// readTicket reads the ticket line a direct receiver writes first.
func readTicket(r *bufio.Reader) (ticket, error) {
	var t ticket
	line, err := r.ReadSlice('\n')
	if err != nil {
		return t, fmt.Errorf("direct transfer: no ticket from the destination: %w", err)
	}
	if err := json.Unmarshal(line, &t); err != nil {
		return t, fmt.Errorf("direct transfer: bad ticket: %w", err)
	}
	return t, nil
}
