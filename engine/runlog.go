package engine

import (
	"fmt"
	"io"

	"github.com/hashicorp/go-hclog"
)

// teeLogger returns a logger that writes everything from debug up to file
// and passes each message on to base, which applies its own level.
func teeLogger(base hclog.Logger, file io.Writer, red *Redactor) hclog.Logger {
	l := hclog.NewInterceptLogger(&hclog.LoggerOptions{Level: hclog.Debug, Output: file})
	l.RegisterSink(forward{base, red})
	return l
}

// forward is a log sink that sends messages to another logger, with the
// sensitive values redacted.
type forward struct {
	to     hclog.Logger
	redact *Redactor
}

func (f forward) Accept(name string, level hclog.Level, msg string, args ...any) {
	l := f.to
	if name != "" {
		l = l.Named(name)
	}
	out := make([]any, len(args))
	for i, a := range args {
		switch a := a.(type) {
		case string:
			out[i] = f.redact.String(a)
		case []string:
			s := make([]string, len(a))
			for j := range a {
				s[j] = f.redact.String(a[j])
			}
			out[i] = s
		case error:
			out[i] = f.redact.String(a.Error())
		case fmt.Stringer:
			out[i] = f.redact.String(a.String())
		default:
			out[i] = a
		}
	}
	l.Log(level, f.redact.String(msg), out...)
}

// redactedError keeps an error's chain for errors.Is and As, with its
// message redacted.
type redactedError struct {
	err error
	msg string
}

func (e redactedError) Error() string { return e.msg }
func (e redactedError) Unwrap() error { return e.err }
