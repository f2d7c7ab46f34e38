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
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
)

// A direct transfer skips the relay through mig: the destination's agent
// listens on a TCP port with TLS 1.3 and a one-time self-signed
// certificate, and sends mig a ticket (port, certificate fingerprint,
// one-time token) on its output stream. mig hands the ticket to the
// source's agent over its SSH session; the source connects, pins the
// certificate, sends the token, then the usual transfer stream. The
// listener binds the address the source was told to reach (every
// interface only when this host does not own it) and admits only the
// source's address when mig gave it. It keeps accepting until a
// connection presents the token or the deadline passes, so a stranger who
// connects first cannot fail the copy, and closes then.

// ticket is what a direct receiver announces.
type ticket struct {
	Port        string `json:"port"`
	Fingerprint string `json:"fingerprint"` // sha256 of the certificate, hex
	Token       string `json:"token"`
}

const (
	directTimeout = 30 * time.Second
	// directHandshake bounds one connection's TLS handshake and token, so
	// that a stranger who connects and says nothing holds nothing up.
	directHandshake = 5 * time.Second
	// directPending bounds the connections being authenticated at once.
	directPending = 16
)

// listenDirect starts a TLS listener on addr, writes the ticket to out,
// and returns the first connection that presents the token. from, when
// not empty, lists the only addresses a connection may come from.
func listenDirect(ctx context.Context, addr string, from []string, out io.Writer, log hclog.Logger) (net.Conn, error) {
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
	deadline := time.Now().Add(directTimeout)
	tl.SetDeadline(deadline)
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
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	won := make(chan net.Conn, 1)
	pending := make(chan struct{}, directPending)
	var refused []string
	var mu sync.Mutex
	refuse := func(who net.Addr, why string) {
		log.Warn("direct transfer: refused a connection", "from", who.String(), "reason", why)
		mu.Lock()
		if len(refused) < 5 {
			refused = append(refused, who.String()+" ("+why+")")
		}
		mu.Unlock()
	}
	for {
		select {
		case conn := <-won:
			return conn, nil
		default:
		}
		raw, err := tl.Accept()
		if err != nil {
			select {
			case conn := <-won:
				return conn, nil
			default:
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			mu.Lock()
			defer mu.Unlock()
			if len(refused) > 0 {
				return nil, fmt.Errorf("direct transfer: no connection from the source with the token; refused %s: %w", strings.Join(refused, ", "), err)
			}
			return nil, fmt.Errorf("direct transfer: no connection from the source: %w", err)
		}
		if !admitted(raw.RemoteAddr(), from) {
			refuse(raw.RemoteAddr(), "not the source's address")
			raw.Close()
			continue
		}
		select {
		case pending <- struct{}{}:
		default:
			refuse(raw.RemoteAddr(), "too many connections")
			raw.Close()
			continue
		}
		go func() {
			defer func() { <-pending }()
			conn := tls.Server(raw, cfg)
			conn.SetDeadline(time.Now().Add(directHandshake))
			got := make([]byte, len(t.Token)+1)
			if _, err := io.ReadFull(conn, got); err != nil {
				refuse(raw.RemoteAddr(), "no token: "+err.Error())
				conn.Close()
				return
			}
			if subtle.ConstantTimeCompare(got, []byte(t.Token+"\n")) != 1 {
				refuse(raw.RemoteAddr(), "wrong token")
				conn.Close()
				return
			}
			conn.SetDeadline(time.Time{})
			select {
			case won <- conn:
				// Wake the accept loop; the listener is done.
				tl.SetDeadline(time.Now())
			default:
				conn.Close()
			}
		}()
	}
}

// admitted says whether a connection from addr may be taken: from lists
// the admitted IPs, and an empty list admits any.
func admitted(addr net.Addr, from []string) bool {
	if len(from) == 0 {
		return true
	}
	ta, ok := addr.(*net.TCPAddr)
	if !ok {
		return false
	}
	for _, f := range from {
		if ip := net.ParseIP(f); ip != nil && ip.Equal(ta.IP) {
			return true
		}
	}
	return false
}

// RouteRequest asks a host which of its addresses it reaches To from.
type RouteRequest struct {
	To string `json:"to"` // a host name or IP
}

// RouteResult is the source address the host's routing picks.
type RouteResult struct {
	IP string `json:"ip"`
}

// route is the "net.route" action: the local address this host's routing
// uses to reach req.To. Nothing is sent: a UDP socket is only connected.
func route(ctx context.Context, c *Call, req RouteRequest) (RouteResult, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", net.JoinHostPort(req.To, "9"))
	if err != nil {
		return RouteResult{}, fmt.Errorf("route to %s: %w", req.To, err)
	}
	defer conn.Close()
	return RouteResult{IP: conn.LocalAddr().(*net.UDPAddr).IP.String()}, nil
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
