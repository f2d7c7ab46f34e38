// Command counter is mig's sample workload: an HTTP server whose counter
// keeps rising by itself, with optional ballast memory (private, and with
// -shared shared, as a database's buffers) filled with a known pattern.
// After a migration, `GET /` shows the counter carried on
// and `GET /check` proves every ballast page arrived intact.
// `GET /stream?bytes=N&chunk=C&every=D` sends N bytes of a known pattern
// (streamByte), C bytes every D, so that a client can check every byte of a
// response that is in flight while the server moves. With -echo, a second
// port echoes every line it reads, for clients that keep a raw TCP
// connection open. With -udp, a UDP port answers every datagram with the
// datagram, a space and the counter, for clients of a UDP service.
//
//	counter [-listen :8080] [-echo :8081] [-udp :8082] [-ballast MiB] [-shared MiB] [-reserve GiB] [-pidfile path]
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	listen := flag.String("listen", ":8080", "address to serve on")
	ballastMiB := flag.Int("ballast", 0, "MiB of memory to fill with a known pattern")
	sharedMiB := flag.Int("shared", 0, "MiB of shared memory (as a database's shared buffers) to fill with the pattern")
	reserveGiB := flag.Int("reserve", 0, "GiB of address space to reserve and never touch, as MariaDB reserves 8 TiB")
	pidfile := flag.String("pidfile", "", "write the process id to this file")
	echo := flag.String("echo", "", "address of a line echo server (off when empty)")
	dial := flag.String("dial", "", "keep a TCP connection to this address open, as to a database (off when empty)")
	udp := flag.String("udp", "", "address of a UDP server answering each datagram with itself and the counter (off when empty)")
	lock := flag.String("lock", "", "hold a POSIX write lock on this file, as a database locks its files (off when empty)")
	flag.Parse()

	if *lock != "" {
		f, err := os.OpenFile(*lock, os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			log.Fatal(err)
		}
		if err := unix.FcntlFlock(f.Fd(), unix.F_SETLK, &unix.Flock_t{Type: unix.F_WRLCK}); err != nil {
			log.Fatalf("lock %s: %v", *lock, err)
		}
		defer f.Close()
	}

	if *pidfile != "" {
		if err := os.WriteFile(*pidfile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			log.Fatal(err)
		}
	}
	ballast := fill(*ballastMiB << 20)
	shared, err := fillShared(*sharedMiB << 20)
	if err != nil {
		log.Fatal(err)
	}
	if *reserveGiB > 0 {
		if _, err := unix.Mmap(-1, 0, *reserveGiB<<30, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE); err != nil {
			log.Fatalf("reserve: %v", err)
		}
	}

	var count atomic.Int64
	go func() {
		for range time.Tick(10 * time.Millisecond) {
			count.Add(1)
		}
	}()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, count.Add(1))
	})
	mux.HandleFunc("GET /check", func(w http.ResponseWriter, r *http.Request) {
		if i := verify(ballast); i >= 0 {
			http.Error(w, fmt.Sprintf("ballast corrupt at byte %d", i), http.StatusInternalServerError)
			return
		}
		if i := verify(shared); i >= 0 {
			http.Error(w, fmt.Sprintf("shared memory corrupt at byte %d", i), http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /stream", stream)
	if *echo != "" {
		eln, err := listenTCP(*echo)
		if err != nil {
			log.Fatal(err)
		}
		go serveEcho(eln)
	}
	if *udp != "" {
		addr, err := net.ResolveUDPAddr("udp", *udp)
		if err != nil {
			log.Fatal(err)
		}
		pc, err := net.ListenUDP("udp", addr)
		if err != nil {
			log.Fatal(err)
		}
		go serveUDP(pc, &count)
	}
	if *dial != "" {
		var d net.Dialer
		d.SetMultipathTCP(false)
		c, err := d.Dial("tcp", *dial)
		if err != nil {
			log.Fatal(err)
		}
		defer c.Close()
	}
	ln, err := listenTCP(*listen)
	if err != nil {
		log.Fatal(err)
	}
	log.Fatal(http.Serve(ln, mux))
}

// listenTCP listens without MPTCP, Go's default, which CRIU cannot dump.
func listenTCP(addr string) (net.Listener, error) {
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	return lc.Listen(context.Background(), "tcp", addr)
}

// streamByte is the byte at offset i of a /stream response.
func streamByte(i int64) byte { return byte(i*31) ^ byte(i>>11) }

func stream(w http.ResponseWriter, r *http.Request) {
	n, _ := strconv.ParseInt(r.URL.Query().Get("bytes"), 10, 64)
	chunk, _ := strconv.Atoi(r.URL.Query().Get("chunk"))
	every, _ := time.ParseDuration(r.URL.Query().Get("every"))
	if chunk <= 0 {
		chunk = 64 << 10
	}
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	buf := make([]byte, chunk)
	flusher, _ := w.(http.Flusher)
	for off := int64(0); off < n; {
		m := min(int64(chunk), n-off)
		for i := range m {
			buf[i] = streamByte(off + i)
		}
		if _, err := w.Write(buf[:m]); err != nil {
			return
		}
		if flusher != nil {
			flusher.Flush()
		}
		off += m
		time.Sleep(every)
	}
}

// serveEcho writes back every line each connection sends.
func serveEcho(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go func() {
			defer c.Close()
			r := bufio.NewReader(c)
			for {
				line, err := r.ReadBytes('\n')
				if len(line) > 0 {
					if _, werr := c.Write(line); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

// pattern is the byte expected at offset i: it varies within a page and
// between pages, so a page that is lost, zeroed or misplaced shows.
func pattern(i int) byte { return byte(i>>12) ^ byte(i*7) }

// pageSize is the period of pattern's high part: byte(i*7) repeats every
// 256 bytes, so page p of the ballast is pages[byte(p)].
const pageSize = 4096

// pages holds the 256 distinct pages of the pattern, so that filling and
// checking a large ballast run at memory speed (a 1 GiB /check takes a
// fraction of a second, not seconds).
var pages = func() [256][pageSize]byte {
	var t [256][pageSize]byte
	for p := range t {
		for j := range pageSize {
			t[p][j] = pattern(p*pageSize + j)
		}
	}
	return t
}()

func fill(n int) []byte {
	b := make([]byte, n)
	for off := 0; off < n; off += pageSize {
		copy(b[off:], pages[byte(off/pageSize)][:])
	}
	return b
}

// fillShared maps n bytes of shared anonymous memory and fills them as
// fill does.
func fillShared(n int) ([]byte, error) {
	if n == 0 {
		return nil, nil
	}
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("shared memory: %w", err)
	}
	for off := 0; off < n; off += pageSize {
		copy(b[off:], pages[byte(off/pageSize)][:])
	}
	return b, nil
}

// verify returns the first offset that does not hold the pattern, or -1.
func verify(b []byte) int {
	for off := 0; off < len(b); off += pageSize {
		page := b[off:min(off+pageSize, len(b))]
		if bytes.Equal(page, pages[byte(off/pageSize)][:len(page)]) {
			continue
		}
		for i := off; i < off+len(page); i++ {
			if b[i] != pattern(i) {
				return i
			}
		}
	}
	return -1
}

// serveUDP answers every datagram on pc with the datagram, a space and
// the counter, from the address it was sent to (as a server with several
// addresses must: the host's own address would be a stranger to a
// client's connected socket).
func serveUDP(pc *net.UDPConn, count *atomic.Int64) {
	raw, err := pc.SyscallConn()
	if err != nil {
		log.Fatal(err)
	}
	raw.Control(func(fd uintptr) {
		// A dual-stack socket reports IPv4 destinations mapped, in
		// IPV6_PKTINFO; an IPv4 socket in IP_PKTINFO.
		if unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1) != nil {
			unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
		}
	})
	buf, oob := make([]byte, 1500), make([]byte, 256)
	for {
		n, oobn, _, from, err := pc.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			return
		}
		reply := fmt.Appendf(buf[:n:n], " %d", count.Add(1))
		pc.WriteMsgUDPAddrPort(reply, replyFrom(oob[:oobn]), from)
	}
}

// replyFrom turns the destination a datagram's control messages give into
// the control message that sends a reply from it.
func replyFrom(oob []byte) []byte {
	msgs, _ := unix.ParseSocketControlMessage(oob)
	for _, m := range msgs {
		switch {
		case m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_PKTINFO && len(m.Data) >= unix.SizeofInet6Pktinfo:
			var info unix.Inet6Pktinfo
			copy(info.Addr[:], m.Data[:16])
			return unix.PktInfo6(&info)
		case m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_PKTINFO && len(m.Data) >= unix.SizeofInet4Pktinfo:
			var info unix.Inet4Pktinfo
			copy(info.Spec_dst[:], m.Data[8:12]) // ipi_addr: the header's destination
			return unix.PktInfo4(&info)
		}
	}
	return nil
}
