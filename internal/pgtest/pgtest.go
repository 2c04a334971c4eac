package pgtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// dirPrefix names the temporary directories of clusters, so that leftovers of
// killed test runs can be found and removed.
const dirPrefix = "ledgerd-pgtest-"

// ownerFile holds the pid of the process that started a cluster.
const ownerFile = "owner.pid"

// superuser is the role initdb creates and tests connect as.
const superuser = "postgres"

// startTimeout bounds pg_ctl start and stop; a loaded CI machine replaying a
// crashed cluster's WAL can be slow.
const startTimeout = 120 * time.Second

// Options configures a cluster.
type Options struct {
	// Settings are extra postgresql.conf settings, applied after the defaults
	// (so they override them), e.g. {"wal_level": "replica"}. The defaults
	// are wal_level=logical, max_replication_slots=32, max_wal_senders=32,
	// fsync=on, a small shared_buffers and logging to the cluster's log file.
	Settings map[string]string
}

// defaultSettings keep the cluster small and fast while leaving durability
// (fsync) on, since crash tests depend on it.
var defaultSettings = map[string]string{
	"wal_level":                 "logical",
	"max_replication_slots":     "32",
	"max_wal_senders":           "32",
	"max_connections":           "60",
	"fsync":                     "on",
	"shared_buffers":            "32MB",
	"max_wal_size":              "256MB",
	"logical_decoding_work_mem": "16MB",
	"wal_sender_timeout":        "60s",
	"log_min_messages":          "warning",
	"log_line_prefix":           "'%m [%p] %a '",
}

// Cluster is a running (or stopped) throw-away PostgreSQL cluster.
type Cluster struct {
	binDir  string
	dir     string // temporary directory holding everything below
	dataDir string
	sockDir string
	logFile string
	port    int
	runAs   *user.User // nil: run as the current user

	mu      sync.Mutex
	running bool
}

// Run is the body of a test package's TestMain: it starts the package's one
// cluster, stores it in *c, runs the tests and closes the cluster. Use it as
// os.Exit(pgtest.Run(m, pgtest.Options{}, &cluster)).
func Run(m *testing.M, opts Options, c **Cluster) int {
	cl, err := Start(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	*c = cl
	defer func() {
		if err := cl.Close(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}()
	return m.Run()
}

// Start initialises a new cluster in a temporary directory and starts it.
// The caller must Close it.
func Start(opts Options) (*Cluster, error) {
	binDir, err := findBinDir()
	if err != nil {
		return nil, err
	}
	removeLeftovers(binDir)

	c := &Cluster{binDir: binDir}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root, initdb needs an unprivileged OS user: create one named postgres (useradd --system postgres): %w", err)
		}
		c.runAs = u
	}
	c.dir, err = os.MkdirTemp("", dirPrefix)
	if err != nil {
		return nil, fmt.Errorf("creating cluster directory: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			c.Close()
		}
	}()
	c.dataDir = filepath.Join(c.dir, "data")
	c.sockDir = filepath.Join(c.dir, "sock")
	c.logFile = filepath.Join(c.dir, "postgres.log")
	if err := os.WriteFile(filepath.Join(c.dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return nil, err
	}
	if err := os.Mkdir(c.sockDir, 0o700); err != nil {
		return nil, err
	}
	if err := c.chown(c.dir, c.sockDir); err != nil {
		return nil, err
	}
	if out, err := c.run("initdb", "-D", c.dataDir, "-U", superuser, "-A", "trust",
		"-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"); err != nil {
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}

	// A free port can be taken by someone else between probing and binding;
	// try a few.
	var lastErr error
	for range 5 {
		c.port, err = freePort()
		if err != nil {
			return nil, err
		}
		if err := c.writeConf(opts.Settings); err != nil {
			return nil, err
		}
		if lastErr = c.startServer(); lastErr == nil {
			ok = true
			return c, nil
		}
	}
	return nil, lastErr
}

// ConnString returns a connection string for database db as the superuser.
func (c *Cluster) ConnString(db string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", superuser, c.port, db)
}

// SocketConnString returns a connection string for database db as the
// superuser over the cluster's Unix socket, which skips the TCP stack that
// caps a walsender's rate.
func (c *Cluster) SocketConnString(db string) string {
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", c.sockDir, c.port, superuser, db)
}

// SocketDir is the directory of the cluster's Unix socket.
func (c *Cluster) SocketDir() string { return c.sockDir }

// Port is the TCP port the cluster listens on (127.0.0.1).
func (c *Cluster) Port() int { return c.port }

// BinDir is the directory of the server binaries (pg_ctl, pg_recvlogical...).
func (c *Cluster) BinDir() string { return c.binDir }

// DataDir is the cluster's data directory.
func (c *Cluster) DataDir() string { return c.dataDir }

// LogFile is the server log, useful when a test fails.
func (c *Cluster) LogFile() string { return c.logFile }

// CreateDatabase creates database name.
func (c *Cluster) CreateDatabase(ctx context.Context, name string) error {
	return c.Exec(ctx, "postgres", "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
}

// DropDatabase drops database name, first dropping the replication slots
// that belong to it and terminating its connections. It is not an error if
// the database does not exist.
func (c *Cluster) DropDatabase(ctx context.Context, name string) error {
	conn, err := pgx.Connect(ctx, c.ConnString("postgres"))
	if err != nil {
		return fmt.Errorf("connecting to drop database %s: %w", name, err)
	}
	defer conn.Close(ctx)
	// Active slots cannot be dropped: end their walsenders first.
	if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, name); err != nil {
		return fmt.Errorf("terminating connections to %s: %w", name, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err = conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1`, name)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // a terminated walsender takes a moment to release its slot
	}
	if err != nil {
		return fmt.Errorf("dropping slots of %s: %w", name, err)
	}
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("dropping database %s: %w", name, err)
	}
	return nil
}

// Exec runs sql on database db, as the superuser, on a new connection.
func (c *Cluster) Exec(ctx context.Context, db, sql string, args ...any) error {
	conn, err := pgx.Connect(ctx, c.ConnString(db))
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", db, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	return nil
}

// Stop shuts the server down cleanly (pg_ctl stop -m fast).
func (c *Cluster) Stop() error { return c.stop("fast") }

// Crash stops the server without a shutdown checkpoint (pg_ctl stop -m
// immediate), as a power loss would: on the next start Postgres replays WAL.
func (c *Cluster) Crash() error { return c.stop("immediate") }

// Restart starts the server again on the same data directory and port.
func (c *Cluster) Restart() error { return c.startServer() }

// Close stops the server, if running, and removes its directory.
func (c *Cluster) Close() error {
	var first error
	if c.dataDir != "" {
		c.mu.Lock()
		running := c.running
		c.mu.Unlock()
		if running {
			if err := c.stop("immediate"); err != nil {
				first = err
			}
		}
	}
	if c.dir != "" {
		if err := os.RemoveAll(c.dir); err != nil && first == nil {
			first = fmt.Errorf("removing cluster directory: %w", err)
		}
	}
	return first
}

// NewDB creates a fresh database named after the test and returns its
// connection string. The database, and any replication slot in it, is
// dropped when the test ends.
func NewDB(t testing.TB, c *Cluster) string {
	t.Helper()
	name := DBName(t.Name())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_ = c.DropDatabase(ctx, name) // a leftover of an earlier -count run
	if err := c.CreateDatabase(ctx, name); err != nil {
		t.Fatalf("creating database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.DropDatabase(ctx, name); err != nil {
			t.Logf("dropping database %s: %v", name, err)
		}
	})
	return c.ConnString(name)
}

// DBName turns a test name into a valid, unique database name: lower case,
// [a-z0-9_] only, at most 63 bytes (long names keep a hash suffix).
func DBName(testName string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(testName) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	s := "t_" + b.String()
	if len(s) > 63 {
		sum := sha256.Sum256([]byte(testName))
		s = s[:54] + "_" + hex.EncodeToString(sum[:4])
	}
	return s
}

func (c *Cluster) writeConf(extra map[string]string) error {
	settings := map[string]string{}
	for k, v := range defaultSettings {
		settings[k] = v
	}
	for k, v := range extra {
		settings[k] = v
	}
	settings["listen_addresses"] = "'127.0.0.1'"
	settings["port"] = strconv.Itoa(c.port)
	settings["unix_socket_directories"] = "'" + c.sockDir + "'"
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	for _, k := range keys {
		fmt.Fprintf(&b, "%s = %s\n", k, settings[k])
	}
	// postgresql.auto.conf is read after postgresql.conf and wins; it is
	// rewritten on every attempt so a retried port replaces the previous one.
	path := filepath.Join(c.dataDir, "postgresql.auto.conf")
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return c.chown(path)
}

func (c *Cluster) startServer() error {
	out, err := c.run("pg_ctl", "start", "-w", "-t", strconv.Itoa(int(startTimeout.Seconds())),
		"-D", c.dataDir, "-l", c.logFile)
	if err != nil {
		return fmt.Errorf("pg_ctl start: %w\n%s\n%s", err, out, c.logTail())
	}
	c.mu.Lock()
	c.running = true
	c.mu.Unlock()
	return nil
}

func (c *Cluster) stop(mode string) error {
	out, err := c.run("pg_ctl", "stop", "-w", "-t", strconv.Itoa(int(startTimeout.Seconds())),
		"-m", mode, "-D", c.dataDir)
	if err != nil {
		return fmt.Errorf("pg_ctl stop -m %s: %w\n%s", mode, err, out)
	}
	c.mu.Lock()
	c.running = false
	c.mu.Unlock()
	return nil
}

func (c *Cluster) logTail() string {
	b, err := os.ReadFile(c.logFile)
	if err != nil {
		return ""
	}
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// run runs a server program from binDir, as the postgres OS user when the
// tests run as root.
func (c *Cluster) run(prog string, args ...string) ([]byte, error) {
	return runAs(c.runAs, c.binDir, c.dir, prog, args...)
}

func runAs(u *user.User, binDir, dir, prog string, args ...string) ([]byte, error) {
	cmd := exec.Command(filepath.Join(binDir, prog), args...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + binDir + ":/usr/bin:/bin", "LANG=C", "LC_ALL=C", "HOME=" + dir}
	if u != nil {
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	}
	// pg_ctl start leaves the server running with our pipes as its stdout
	// unless told otherwise (-l): capture into a buffer, not a pipe we wait on.
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	return out.Bytes(), err
}

func (c *Cluster) chown(paths ...string) error {
	if c.runAs == nil {
		return nil
	}
	uid, _ := strconv.Atoi(c.runAs.Uid)
	gid, _ := strconv.Atoi(c.runAs.Gid)
	for _, p := range paths {
		if err := os.Chown(p, uid, gid); err != nil {
			return fmt.Errorf("handing %s to the postgres OS user: %w", p, err)
		}
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// findBinDir locates the server binaries: pg_config --bindir, then the
// highest /usr/lib/postgresql/<version>/bin, then initdb on PATH.
func findBinDir() (string, error) {
	has := func(dir string) bool {
		_, err := os.Stat(filepath.Join(dir, "initdb"))
		return err == nil
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if dir := strings.TrimSpace(string(out)); has(dir) {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	best, bestVer := "", -1.0
	for _, d := range dirs {
		v, err := strconv.ParseFloat(filepath.Base(filepath.Dir(d)), 64)
		if err == nil && v > bestVer && has(d) {
			best, bestVer = d, v
		}
	}
	if best != "" {
		return best, nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errors.New("no PostgreSQL server binaries found (pg_config --bindir, /usr/lib/postgresql/*/bin, PATH): install the postgresql package")
}

// removeLeftovers stops and removes clusters whose owning test process is
// gone (a test binary killed before its cleanup ran).
func removeLeftovers(binDir string) {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, ownerFile))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || processAlive(pid) {
			continue
		}
		var u *user.User
		if os.Geteuid() == 0 {
			u, _ = user.Lookup("postgres")
		}
		data := filepath.Join(d, "data")
		if _, err := os.Stat(filepath.Join(data, "postmaster.pid")); err == nil {
			_, _ = runAs(u, binDir, d, "pg_ctl", "stop", "-w", "-m", "immediate", "-D", data)
		}
		_ = os.RemoveAll(d)
	}
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
