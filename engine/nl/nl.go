// Package nl holds what mig's netlink users share.
package nl

import (
	"errors"

	"github.com/vishvananda/netlink"
)

// Dump runs a netlink dump (a list of links, addresses, neighbours) again
// when the kernel says the list changed while it was read, which another
// lab or a moving address can cause at any time; such a dump returns a
// partial list with netlink.ErrDumpInterrupted.
func Dump[T any](list func() (T, error)) (T, error) {
	var v T
	var err error
	for range 10 {
		if v, err = list(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, err
}
