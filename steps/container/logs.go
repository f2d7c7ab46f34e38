package container

import (
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/sirupsen/logrus"
)

var logsMu sync.Mutex

// routeLogs sends what libcontainer logs (through the process-wide
// logrus, such as the CRIU log excerpts it prints on failure) to log at
// debug level instead of stderr; mig's own errors already carry the
// lines that explain a failure.
func routeLogs(log hclog.Logger) {
	if log == nil {
		return
	}
	logsMu.Lock()
	defer logsMu.Unlock()
	logrus.SetOutput(log.Named("libcontainer").StandardWriter(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}))
	logrus.SetFormatter(&logrus.TextFormatter{DisableTimestamp: true, DisableQuote: true})
}
