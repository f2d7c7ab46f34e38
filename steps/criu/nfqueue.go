package criu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// nfQueue is a minimal client of the kernel's nfnetlink_queue: it binds one
// queue, receives the packets an NFQUEUE rule sends there (the kernel holds
// each until a verdict), and gives verdicts.
type nfQueue struct {
	fd  int
	num uint16
}

// nfnetlink_queue message types and attributes (linux/netfilter/nfnetlink_queue.h).
const (
	nfnlSubsysQueue = 3
	nfqMsgPacket    = nfnlSubsysQueue<<8 | 0
	nfqMsgVerdict   = nfnlSubsysQueue<<8 | 1
	nfqMsgConfig    = nfnlSubsysQueue<<8 | 2
	nfqMsgBatch     = nfnlSubsysQueue<<8 | 3

	nfqaPacketHdr  = 1
	nfqaVerdictHdr = 2
	nfqaPayload    = 10

	nfqaCfgCmd    = 1
	nfqaCfgParams = 2
	nfqaCfgMaxLen = 3

	nfqCmdBind    = 1
	nfqCopyPacket = 2

	nlaTypeMask = 0x3fff

	nfDrop   = 0
	nfAccept = 1
)

// openQueue binds the first free queue number from first on.
func openQueue(first uint16) (*nfQueue, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("nfnetlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("nfnetlink bind: %w", err)
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20)
	// Errors about lost packets are not fatal: the kernel drops what it
	// cannot queue, and the client retransmits.
	unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_NO_ENOBUFS, 1)
	q := &nfQueue{fd: fd}
	var last error
	for n := 0; n < 64; n++ {
		q.num = first + uint16(n)
		cmd := []byte{nfqCmdBind, 0, 0, 0}
		if last = q.request(nfqMsgConfig, attr(nfqaCfgCmd, cmd)); last != nil {
			continue
		}
		params := make([]byte, 5)
		binary.BigEndian.PutUint32(params, 0xffff)
		params[4] = nfqCopyPacket
		maxLen := binary.BigEndian.AppendUint32(nil, 4096)
		if last = q.request(nfqMsgConfig, append(attr(nfqaCfgParams, params), attr(nfqaCfgMaxLen, maxLen)...)); last != nil {
			break
		}
		return q, nil
	}
	unix.Close(fd)
	return nil, fmt.Errorf("bind an NFQUEUE queue from %d on: %w", first, last)
}

func (q *nfQueue) Close() error { return unix.Close(q.fd) }

// attr is one netlink attribute, padded to 4 bytes.
func attr(typ uint16, data []byte) []byte {
	b := binary.NativeEndian.AppendUint16(nil, uint16(4+len(data)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// message is a netlink message with an nfgenmsg header for this queue.
func (q *nfQueue) message(typ uint16, flags uint16, attrs []byte) []byte {
	b := binary.NativeEndian.AppendUint32(nil, uint32(16+4+len(attrs)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = binary.NativeEndian.AppendUint16(b, flags)
	b = binary.NativeEndian.AppendUint32(b, 0) // seq
	b = binary.NativeEndian.AppendUint32(b, 0) // pid: the kernel
	b = append(b, unix.AF_UNSPEC, 0)           // nfgenmsg: family, version
	b = binary.BigEndian.AppendUint16(b, q.num)
	return append(b, attrs...)
}

// request sends a message and waits for the kernel's acknowledgement.
func (q *nfQueue) request(typ uint16, attrs []byte) error {
	if err := unix.Sendto(q.fd, q.message(typ, unix.NLM_F_REQUEST|unix.NLM_F_ACK, attrs), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 8192)
	for {
		n, _, err := unix.Recvfrom(q.fd, buf, 0)
		if err != nil {
			return err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.Header.Type == unix.NLMSG_ERROR && len(m.Data) >= 4 {
				if e := int32(binary.NativeEndian.Uint32(m.Data)); e != 0 {
					return unix.Errno(-e)
				}
				return nil
			}
		}
	}
}

// verdict releases (nfAccept) or drops (nfDrop) a held packet. It asks
// for no acknowledgement: the kernel answers a refused verdict all the
// same, and the reader logs it.
func (q *nfQueue) verdict(id uint32, v uint32) error {
	return q.send(nfqMsgVerdict, id, v)
}

// verdictBatch gives verdict v to every packet still queued whose id is id
// or lower, in one message.
func (q *nfQueue) verdictBatch(id uint32, v uint32) error {
	return q.send(nfqMsgBatch, id, v)
}

func (q *nfQueue) send(typ uint16, id, v uint32) error {
	hdr := binary.BigEndian.AppendUint32(nil, v)
	hdr = binary.BigEndian.AppendUint32(hdr, id)
	return unix.Sendto(q.fd, q.message(typ, unix.NLM_F_REQUEST, attr(nfqaVerdictHdr, hdr)), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
}

// queued is a packet the kernel holds for a verdict.
type queued struct {
	id      uint32
	payload []byte // the IP packet
}

// read returns the packets of one receive; it blocks until one comes.
func (q *nfQueue) read(buf []byte) ([]queued, error) {
	n, _, err := unix.Recvfrom(q.fd, buf, 0)
	if err != nil {
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.ENOBUFS) {
			return nil, nil
		}
		return nil, os.NewSyscallError("recvfrom", err)
	}
	var out []queued
	for _, m := range netlinkMessages(buf[:n]) {
		if m.Header.Type == unix.NLMSG_ERROR && len(m.Data) >= 4 {
			if e := int32(binary.NativeEndian.Uint32(m.Data)); e != 0 {
				return out, &ackError{unix.Errno(-e)}
			}
		}
		if m.Header.Type != nfqMsgPacket || len(m.Data) < 4 {
			continue
		}
		var p queued
		ok := false
		for a := m.Data[4:]; len(a) >= 4; {
			l := int(binary.NativeEndian.Uint16(a))
			typ := binary.NativeEndian.Uint16(a[2:]) & nlaTypeMask
			if l < 4 || l > len(a) {
				break
			}
			data := a[4:l]
			switch typ {
			case nfqaPacketHdr:
				if len(data) >= 4 {
					p.id, ok = binary.BigEndian.Uint32(data), true
				}
			case nfqaPayload:
				p.payload = append([]byte(nil), data...)
			}
			a = a[min((l+3)&^3, len(a)):]
		}
		if ok {
			out = append(out, p)
		}
	}
	return out, nil
}

// netlinkMessages splits a netlink datagram into its messages. Unlike
// syscall.ParseNetlinkMessage it takes a last message whose length is not
// padded to 4 bytes, as nfnetlink_queue sends a packet of such a length
// (a SYN never is; a segment with data often is).
func netlinkMessages(b []byte) []syscall.NetlinkMessage {
	var msgs []syscall.NetlinkMessage
	for len(b) >= unix.NLMSG_HDRLEN {
		l := int(binary.NativeEndian.Uint32(b))
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			break
		}
		msgs = append(msgs, syscall.NetlinkMessage{
			Header: syscall.NlMsghdr{Len: uint32(l), Type: binary.NativeEndian.Uint16(b[4:])},
			Data:   b[unix.NLMSG_HDRLEN:l],
		})
		b = b[min((l+3)&^3, len(b)):]
	}
	return msgs
}

// ackError is the kernel's answer to a verdict it refused; reading goes on.
type ackError struct{ errno unix.Errno }

func (e *ackError) Error() string { return "nfqueue verdict: " + e.errno.Error() }
