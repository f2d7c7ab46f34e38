package host

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"
)

// SSHConfig says how to reach an OpenSSH host.
type SSHConfig struct {
	Address        string        // host:port, port 22 when missing
	User           string        // default: the current user
	IdentityFile   string        // private key file; ssh-agent is used too when SSH_AUTH_SOCK is set
	KnownHosts     string        // default ~/.ssh/known_hosts
	ConnectTimeout time.Duration // default 10s
	Keepalive      time.Duration // interval of keepalive requests, default 5s; 3 unanswered drop the connection
	WorkDir        string        // mig's directory on the host, default /var/lib/mig
	// Binary is the local mig binary installed on the host, default
	// os.Executable(). It must run `<binary> agent`.
	Binary string
}

// SSH is a host reached over one SSH connection. Each Call runs in its own
// session, in mig's agent on the host, which is installed on first use.
// When the connection breaks, the next Call redials it with backoff (see
// redial.go).
type SSH struct {
	name  string
	cfg   SSHConfig
	log   hclog.Logger
	home  string
	known ssh.HostKeyCallback
	done  chan struct{}
	once  sync.Once
	inst  *installer // keeps mig's binary installed on the host

	dialMu sync.Mutex // one redial at a time
	cmu    sync.Mutex // guards cur and closed
	cur    *sshConn   // the current connection
	closed bool

	warmOnce sync.Once
	warm     chan *agentSession // agents started ahead (see warm.go)
}

// sshConn is one SSH connection; gone is closed when it ended.
type sshConn struct {
	client *ssh.Client
	gone   chan struct{}
	dead   atomic.Bool // closed by mig, maybe before gone is
}

// broken says whether the connection has ended.
func (c *sshConn) broken() bool {
	if c.dead.Load() {
		return true
	}
	select {
	case <-c.gone:
		return true
	default:
		return false
	}
}

// drop closes the connection, taking it for dead at once.
func (c *sshConn) drop() {
	c.dead.Store(true)
	c.client.Close()
}

// DialSSH connects to an SSH host and checks its host key against
// known_hosts. Errors name the host.
func DialSSH(ctx context.Context, name string, cfg SSHConfig, log hclog.Logger) (*SSH, error) {
	if cfg.Address == "" {
		return nil, fmt.Errorf("host %q: ssh address is empty", name)
	}
	if _, _, err := net.SplitHostPort(cfg.Address); err != nil {
		cfg.Address = net.JoinHostPort(cfg.Address, "22")
	}
	home, _ := os.UserHomeDir()
	if cfg.User == "" {
		if u, err := user.Current(); err == nil {
			cfg.User = u.Username
		}
	}
	if cfg.KnownHosts == "" {
		cfg.KnownHosts = filepath.Join(home, ".ssh", "known_hosts")
	}
	cfg.KnownHosts, cfg.IdentityFile = expandHome(cfg.KnownHosts, home), expandHome(cfg.IdentityFile, home)
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	if cfg.Keepalive <= 0 {
		cfg.Keepalive = 5 * time.Second
	}
	if cfg.WorkDir == "" {
		cfg.WorkDir = "/var/lib/mig"
	}
	known, err := knownhosts.New(cfg.KnownHosts)
	if errors.Is(err, os.ErrNotExist) {
		h, port, _ := net.SplitHostPort(cfg.Address)
		return nil, fmt.Errorf("host %q (%s): known_hosts file %s does not exist, so the host's key cannot be checked; "+
			"create it with the host's key, after checking its fingerprint:\n  ssh-keyscan -p %s %s >> %s", name, cfg.Address, cfg.KnownHosts, port, h, cfg.KnownHosts)
	}
	if err != nil {
		return nil, fmt.Errorf("host %q (%s): known_hosts: %v", name, cfg.Address, err)
	}
	s := &SSH{
		name:  name,
		cfg:   cfg,
		log:   log,
		home:  home,
		known: known,
		done:  make(chan struct{}),
		inst:  &installer{workDir: cfg.WorkDir, binary: cfg.Binary, goarch: goarch(), log: log},
	}
	c, err := s.dial(ctx)
	if err != nil {
		return nil, err
	}
	s.cur = c
	log.Debug("connected", "address", cfg.Address, "user", cfg.User)
	return s, nil
}

// dial opens a new connection, checking the host key, and starts its
// keepalives. A *permanentError is not worth retrying.
func (s *SSH) dial(ctx context.Context) (*sshConn, error) {
	cfg, name := s.cfg, s.name
	fail := func(format string, args ...any) error {
		return fmt.Errorf("host %q (%s): %s", name, cfg.Address, fmt.Sprintf(format, args...))
	}
	auth, closeAgent, err := authMethod(cfg.IdentityFile, s.home)
	if err != nil {
		return nil, &permanentError{fail("%v", err)}
	}
	defer closeAgent()

	ctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	d := net.Dialer{KeepAlive: 30 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", cfg.Address)
	if err != nil {
		return nil, fail("unreachable: %v", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	var keyErr error
	config := &ssh.ClientConfig{
		User: cfg.User,
		Auth: []ssh.AuthMethod{auth},
		HostKeyCallback: func(hostname string, remote net.Addr, key ssh.PublicKey) error {
			err := s.known(hostname, remote, key)
			if err != nil {
				keyErr = hostKeyError(name, cfg.Address, cfg.KnownHosts, key, err)
			}
			return err
		},
		HostKeyAlgorithms: knownAlgorithms(s.known, cfg.Address, conn.RemoteAddr()),
		Timeout:           cfg.ConnectTimeout,
	}
	c, chans, reqs, err := ssh.NewClientConn(bufferedConn{conn, bufio.NewReaderSize(conn, 256<<10)}, cfg.Address, config)
	if err != nil {
		conn.Close()
		switch {
		case keyErr != nil:
			return nil, &permanentError{keyErr}
		case strings.Contains(err.Error(), "unable to authenticate"):
			return nil, &permanentError{fail("authentication as %q failed (identity_file %q, ssh-agent %v): %v",
				cfg.User, cfg.IdentityFile, os.Getenv("SSH_AUTH_SOCK") != "", err)}
		default:
			return nil, fail("ssh handshake: %v", err)
		}
	}
	conn.SetDeadline(time.Time{})
	sc := &sshConn{client: ssh.NewClient(c, chans, reqs), gone: make(chan struct{})}
	go func() {
		sc.client.Wait()
		close(sc.gone)
	}()
	go s.keepalive(sc)
	return sc, nil
}

// bufferedConn reads through a large buffer, so a busy connection takes
// fewer, larger reads than the SSH package's own small buffer makes.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// authMethod offers the identity file's key and ssh-agent's keys, in one
// method so the client tries them all.
func authMethod(identity, home string) (ssh.AuthMethod, func(), error) {
	var signers []ssh.Signer
	closeAgent := func() {}
	files := []string{identity}
	if identity == "" {
		files = nil
		for _, n := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
			files = append(files, filepath.Join(home, ".ssh", n))
		}
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			if identity != "" {
				return nil, nil, fmt.Errorf("identity_file: %v", err)
			}
			continue
		}
		s, err := ssh.ParsePrivateKey(b)
		var pass *ssh.PassphraseMissingError
		switch {
		case errors.As(err, &pass):
			if identity != "" && os.Getenv("SSH_AUTH_SOCK") == "" {
				return nil, nil, fmt.Errorf("identity_file %s is passphrase-protected: load it into ssh-agent", f)
			}
		case err != nil:
			if identity != "" {
				return nil, nil, fmt.Errorf("identity_file %s: %v", f, err)
			}
		default:
			signers = append(signers, s)
		}
	}
	if sock := os.Getenv("SSH_AUTH_SOCK"); sock != "" {
		if conn, err := net.Dial("unix", sock); err == nil {
			closeAgent = func() { conn.Close() }
			if more, err := agent.NewClient(conn).Signers(); err == nil {
				signers = append(signers, more...)
			}
		}
	}
	if len(signers) == 0 {
		closeAgent()
		return nil, nil, errors.New("no SSH key: set identity_file or load a key into ssh-agent (SSH_AUTH_SOCK)")
	}
	return ssh.PublicKeys(signers...), closeAgent, nil
}

// knownAlgorithms returns the host key algorithms known_hosts has keys of
// for addr, so the server offers a key we can check. It asks the callback
// about a throwaway key: the error lists the keys on file.
func knownAlgorithms(known ssh.HostKeyCallback, addr string, remote net.Addr) []string {
	_, priv, _ := ed25519.GenerateKey(nil)
	probe, _ := ssh.NewSignerFromKey(priv)
	var ke *knownhosts.KeyError
	if err := known(addr, remote, probe.PublicKey()); !errors.As(err, &ke) {
		return nil
	}
	var algs []string
	seen := map[string]bool{}
	for _, k := range ke.Want {
		t := k.Key.Type()
		if seen[t] {
			continue
		}
		seen[t] = true
		if t == ssh.KeyAlgoRSA {
			algs = append(algs, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256)
		}
		algs = append(algs, t)
	}
	return algs
}

// hostKeyError explains a refused host key and how to trust it.
func hostKeyError(name, addr, file string, key ssh.PublicKey, err error) error {
	h, port, _ := net.SplitHostPort(addr)
	scan := fmt.Sprintf("ssh-keyscan -p %s -t %s %s >> %s", port, strings.TrimPrefix(key.Type(), "ssh-"), h, file)
	fp := ssh.FingerprintSHA256(key)
	var ke *knownhosts.KeyError
	if errors.As(err, &ke) && len(ke.Want) == 0 {
		return fmt.Errorf("host %q (%s): unknown host key %s %s, not in %s; refusing to connect.\n"+
			"Check it against the host (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub there), then trust it with:\n  %s",
			name, addr, key.Type(), fp, file, scan)
	}
	if errors.As(err, &ke) {
		var had []string
		for _, k := range ke.Want {
			had = append(had, fmt.Sprintf("%s %s (%s:%d)", k.Key.Type(), ssh.FingerprintSHA256(k.Key), k.Filename, k.Line))
		}
		return fmt.Errorf("host %q (%s): HOST KEY MISMATCH: the host offered %s %s but known_hosts has %s; "+
			"refusing to connect (someone may be intercepting the connection).\n"+
			"If the host's key was changed on purpose, remove the old entry and trust the new one:\n  ssh-keygen -R '%s' -f %s\n  %s",
			name, addr, key.Type(), fp, strings.Join(had, ", "), knownhosts.Normalize(addr), file, scan)
	}
	return fmt.Errorf("host %q (%s): host key %s refused: %v", name, addr, fp, err)
}

// keepalive sends keepalive@openssh.com requests and closes the connection
// when the host stops answering, so that calls on it fail and redial.
func (s *SSH) keepalive(c *sshConn) {
	t := time.NewTicker(s.cfg.Keepalive)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-c.gone:
			return
		case <-t.C:
		}
		reply := make(chan error, 1)
		go func() {
			_, _, err := c.client.SendRequest("keepalive@openssh.com", true, nil)
			reply <- err
		}()
		select {
		case <-s.done:
			return
		case <-c.gone:
			return
		case err := <-reply:
			if err == nil {
				continue
			}
			s.log.Warn("connection lost", "error", err)
		case <-time.After(3 * s.cfg.Keepalive):
			s.log.Warn("no answer to keepalives; closing the connection")
		}
		c.drop()
		return
	}
}

func (s *SSH) Name() string { return s.name }

// Address is the host's SSH address, host:port.
func (s *SSH) Address() string { return s.cfg.Address }

func (s *SSH) Close() error {
	s.once.Do(func() { close(s.done) })
	s.warmOnce.Do(func() {})
	s.closeWarm()
	s.cmu.Lock()
	s.closed = true
	c := s.cur
	s.cmu.Unlock()
	if c == nil {
		return nil
	}
	return c.client.Close()
}

// Call runs an action in the host's agent. A connection found broken is
// redialed first (redial.go). A call whose connection broke before the
// agent got the request is made again on the new connection; one that broke
// while the action ran is made again only when the action is idempotent
// (Idempotent, CallOpts.Idempotent) and streams no input. Both go on until
// ctx ends. If the agent did not start (the launcher refused a binary that
// changed since it was hashed, or the binary is gone), the binary is
// checked (and reinstalled) again, the agents started ahead are dropped,
// and the call is made once more: the action never started and none of its
// input was sent.
func (s *SSH) Call(ctx context.Context, action string, req, resp any, opts CallOpts) error {
	err := s.callRedial(ctx, action, req, resp, opts)
	// A few times: agents started ahead in the meantime may be refused too.
	for try := 0; try < 3 && errors.Is(err, errNotLaunched); try++ {
		s.log.Warn("the agent did not start; checking its binary again", "error", err)
		s.inst.forget()
		s.warmOnce.Do(func() {})
		s.closeWarm()
		err = s.callRedial(ctx, action, req, resp, opts)
	}
	return err
}

// callRedial makes the call on a live connection, again on a new one when
// the connection broke (see Call).
func (s *SSH) callRedial(ctx context.Context, action string, req, resp any, opts CallOpts) error {
	repeat := opts.In == nil && (opts.Idempotent || Idempotent[action])
	for attempt := 1; ; attempt++ {
		c, err := s.connect(ctx)
		if err != nil {
			return &ActionError{Host: s.name, Action: action, Err: err}
		}
		started, err := s.call(ctx, c, action, req, resp, opts)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || !s.lost(c, err) || (started && !repeat) {
			var ae *ActionError
			if errors.As(err, &ae) {
				return err
			}
			return &ActionError{Host: s.name, Action: action, Err: err}
		}
		s.log.Warn("connection lost during a call; calling again on a new connection",
			"action", action, "attempt", attempt, "started", started, "error", err)
	}
}

// call runs one action on connection c. started says whether the agent
// may have received the request.
func (s *SSH) call(ctx context.Context, c *sshConn, action string, req, resp any, opts CallOpts) (started bool, err error) {
	bin, id, err := s.inst.ensure(ctx, sshRunner{s, c})
	if err != nil {
		return false, &ActionError{Host: s.name, Err: err}
	}
	bin += "\n" + id // the launcher reads the path, then the identity
	defer s.refill(c, bin)
	started, err = s.callOn(ctx, c, bin, action, req, resp, opts, false)
	var dead warmNotSent
	if errors.As(err, &dead) {
		// A waiting agent that died never got the request: use a new one.
		s.log.Debug("an agent started ahead had exited; calling on a new one", "action", action, "error", dead.error)
		started, err = s.callOn(ctx, c, bin, action, req, resp, opts, true)
	}
	return started, err
}

// callOn makes the call on an agent on c: one started ahead, unless fresh.
func (s *SSH) callOn(ctx context.Context, c *sshConn, bin, action string, req, resp any, opts CallOpts, fresh bool) (started bool, err error) {
	var a *agentSession
	if fresh {
		a, err = s.startAgent(ctx, c, bin)
	} else {
		a, err = s.agent(ctx, c, bin)
	}
	if err != nil {
		return false, err
	}
	sess, stdin, stdout, stderr := a.sess, a.stdin, a.stdout, a.stderr
	idle := false
	defer func() {
		if !idle || !s.keep(a) {
			sess.Close()
		}
	}()
	// The launcher says it runs the checked binary before anything is
	// sent, so a refused launch has consumed none of the call's input.
	if !a.served {
		if err := launched(sess, stdout, stderr); err != nil {
			return false, err
		}
	}
	a.served = true
	log := s.log.Named(action)
	abort := func() {
		sess.Signal(ssh.SIGTERM)
		sess.Close()
	}
	idle, err = callAgent(ctx, stdin, stdout, action, req, resp, opts, log, abort)
	var ns notSent
	if errors.As(err, &ns) {
		if a.warm {
			return false, warmNotSent{err}
		}
		return false, err
	}
	if errors.Is(err, errLost) {
		// Let the session deliver the agent's last words, briefly.
		waitBriefly(sess)
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			err = fmt.Errorf("%w (agent stderr: %s)", err, msg)
		}
	}
	return true, err
}

// waitBriefly waits up to a second for sess to end, so that what its
// program last wrote has arrived.
func waitBriefly(sess *ssh.Session) {
	exited := make(chan struct{})
	go func() { sess.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(time.Second):
	}
}

// launched reads the byte the launcher writes once it has checked the
// binary, or returns why it did not start it.
func launched(sess *ssh.Session, stdout io.Reader, stderr *tail) error {
	var b [1]byte
	if _, err := io.ReadFull(stdout, b[:]); err == nil && b[0] == launchedByte {
		return nil
	}
	waitBriefly(sess)
	if msg := strings.TrimSpace(stderr.String()); msg != "" {
		return fmt.Errorf("%w: %s", errNotLaunched, msg)
	}
	return fmt.Errorf("%w: the launcher ended without starting it", errNotLaunched)
}

// errNotLaunched is a call whose agent did not start: nothing was sent.
var errNotLaunched = errors.New("start agent")

// tail keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = t.buf[len(t.buf)-t.max:]
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// sshRunner runs commands in sessions on one connection (Runner).
type sshRunner struct {
	s *SSH
	c *sshConn
}

// Run runs a fixed command in a new session with stdin, and returns its
// stdout. A non-zero exit is an error carrying stderr.
func (r sshRunner) Run(ctx context.Context, argv []string, stdin io.Reader) (string, error) {
	sess, err := r.s.session(ctx, r.c)
	if err != nil {
		return "", err
	}
	defer sess.Close()
	var stdout, stderr bytes.Buffer
	sess.Stdin, sess.Stdout, sess.Stderr = stdin, &stdout, &stderr
	stop := context.AfterFunc(ctx, func() { sess.Close() })
	defer stop()
	if err := sess.Run(shellJoin(argv)); err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			return "", fmt.Errorf("%v: %s", err, msg)
		}
		return "", err
	}
	return stdout.String(), nil
}

// shellJoin makes a command line of argv for the remote shell, quoting
// each word that needs it. argv is always mig's own constant: no value from
// a workflow is ever part of a command line.
func shellJoin(argv []string) string {
	words := make([]string, len(argv))
	for i, a := range argv {
		if a != "" && strings.Trim(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./-") == "" {
			words[i] = a
		} else {
			words[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(words, " ")
}

// expandHome turns a leading "~/" into the user's home directory, as ssh
// does for the same settings.
func expandHome(path, home string) string {
	if rest, ok := strings.CutPrefix(path, "~/"); ok && home != "" {
		return filepath.Join(home, rest)
	}
	return path
}
