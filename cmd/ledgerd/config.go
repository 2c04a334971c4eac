package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/ledgerd/ledgerd/api"
	"github.com/ledgerd/ledgerd/deliver"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/stream"
)

// config is the daemon's configuration (docs/operations.md, "Flags").
type config struct {
	PGURL               string
	Slot                string
	Publication         string
	CreateSlot          bool
	CreatePublication   string
	DB                  string
	Listen              string
	TokenFile           string
	TTL                 time.Duration
	ReconcileInterval   time.Duration
	StatusInterval      time.Duration
	HeartbeatInterval   time.Duration
	StallGrace          time.Duration
	ChallengeTimeout    time.Duration
	MaxShapeLagBytes    byteSize
	EvictMaxFraction    float64
	OutboxBytes         byteSize
	SlowConsumerTimeout time.Duration
	LogLevel            string

	// Limits (see api.Limits) and the retention of gone consumers.
	MaxFilterColumns     int
	MaxFilterValues      int
	MaxValueBytes        byteSize
	MaxShapesPerConsumer int
	MaxConsumers         int
	ConsumerRetention    time.Duration
	AdoptSlot            bool

	AdminTokenFile string
	MaxConnections int
	// ReplicaIdentity "full" sets REPLICA IDENTITY FULL on tables filtered on non-key columns.
	ReplicaIdentity string
	// Version prints the build and exits (-version).
	Version bool
	// FragmentBytes is about the largest txn frame; larger transactions are sent in parts.
	FragmentBytes byteSize
}

// envPrefix is the prefix of every flag's environment variable.
const envPrefix = "LEDGERD_"

// envName returns the environment variable of a flag: -pg-url -> LEDGERD_PG_URL.
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func newFlagSet(cfg *config, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("ledgerd", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&cfg.PGURL, "pg-url", "", "Postgres connection string (required); ledgerd adds replication=database for the stream")
	fs.StringVar(&cfg.Slot, "slot", "ledgerd", "logical replication slot name")
	fs.StringVar(&cfg.Publication, "publication", "ledgerd", "publication name")
	fs.BoolVar(&cfg.CreateSlot, "create-slot", false, "create the slot if it is missing")
	fs.StringVar(&cfg.CreatePublication, "create-publication", "", `create the publication if missing: "all" or a comma list of tables`)
	fs.StringVar(&cfg.DB, "db", "ledgerd.db", "ledger file")
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:7070", "API address: host:port or unix:/path")
	fs.StringVar(&cfg.TokenFile, "token-file", "", "file holding the bearer token every API call must carry")
	fs.DurationVar(&cfg.TTL, "ttl", 10*time.Second, "default consumer lease TTL")
	fs.DurationVar(&cfg.ReconcileInterval, "reconcile-interval", time.Second, "reconcile pass period")
	fs.DurationVar(&cfg.StatusInterval, "status-interval", time.Second, "max time between status updates to Postgres")
	fs.DurationVar(&cfg.HeartbeatInterval, "heartbeat-interval", 10*time.Second, "idle-database heartbeat message period (0 = off)")
	fs.DurationVar(&cfg.StallGrace, "stall-grace", 60*time.Second, "pending without ack progress before a challenge")
	fs.DurationVar(&cfg.ChallengeTimeout, "challenge-timeout", 10*time.Second, "time to answer a challenge")
	cfg.MaxShapeLagBytes = 0
	fs.Var(&cfg.MaxShapeLagBytes, "max-shape-lag-bytes", "per-shape WAL budget, e.g. 1GiB (0 = off)")
	fs.Float64Var(&cfg.EvictMaxFraction, "evict-max-fraction", 0.5, "circuit breaker: max fraction of shapes auto-evicted per minute (floor: 10 a minute)")
	cfg.OutboxBytes = 64 << 20
	fs.Var(&cfg.OutboxBytes, "outbox-bytes", "per-consumer outbox of unacked transactions, e.g. 64MiB")
	fs.DurationVar(&cfg.SlowConsumerTimeout, "slow-consumer-timeout", 30*time.Second, "backpressure limit before a consumer's stream is closed")
	fs.StringVar(&cfg.LogLevel, "log-level", "info", "log level: trace, debug, info, warn, error")
	fs.IntVar(&cfg.MaxFilterColumns, "max-filter-columns", api.DefaultMaxFilterColumns, "most columns one shape's filter may name (over: 422 filter_too_large)")
	fs.IntVar(&cfg.MaxFilterValues, "max-filter-values", api.DefaultMaxFilterValues, "most values one filter may list over all its columns (over: 422 filter_too_large)")
	cfg.MaxValueBytes = api.DefaultMaxValueBytes
	fs.Var(&cfg.MaxValueBytes, "max-value-bytes", "longest filter value, e.g. 1KiB (over: 422 value_too_long)")
	fs.IntVar(&cfg.MaxShapesPerConsumer, "max-shapes-per-consumer", api.DefaultMaxShapesPerConsumer, "most live shapes one consumer may own (reached: 429 too_many_shapes)")
	fs.IntVar(&cfg.MaxConsumers, "max-consumers", api.DefaultMaxConsumers, "most consumers holding a lease at once (reached: 429 too_many_consumers)")
	fs.DurationVar(&cfg.ConsumerRetention, "consumer-retention", ledger.DefaultConsumerRetention, "how long the record of a gone consumer is kept")
	fs.BoolVar(&cfg.AdoptSlot, "adopt-slot", false, "accept a slot whose history this ledger file does not hold (a new, lost or 0-byte file, an old backup): every consumer must resynchronise")
	fs.StringVar(&cfg.AdminTokenFile, "admin-token-file", "", "file holding the bearer token /v1/debug/* and POST /v1/shapes/{id}/evict need instead of -token-file's")
	fs.IntVar(&cfg.MaxConnections, "max-connections", DefaultMaxConnections, "most API connections open at once; more wait in the listen backlog")
	fs.StringVar(&cfg.ReplicaIdentity, "replica-identity", "", `"full": set REPLICA IDENTITY FULL on a table the first time a shape filters it on a column outside its key, so its deletes can be filtered ("" leaves tables alone and warns)`)
	fs.BoolVar(&cfg.Version, "version", false, "print the build's version and exit")
	cfg.FragmentBytes = deliver.DefaultFragmentBytes
	fs.Var(&cfg.FragmentBytes, "fragment-bytes", "largest txn frame, e.g. 4MiB; bigger transactions are sent in parts")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: ledgerd -pg-url URL [flags]\n\nEvery flag can be set in the environment as %s<FLAG> (e.g. LEDGERD_PG_URL); the command line wins.\n\n", envPrefix)
		fs.PrintDefaults()
	}
	return fs
}

// parseConfig applies the environment, then the command line, then checks
// the result.
func parseConfig(args []string, getenv func(string) string, out io.Writer) (config, error) {
	var cfg config
	fs := newFlagSet(&cfg, out)
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		v := getenv(envName(f.Name))
		if v == "" || envErr != nil || f.Name == "version" {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			envErr = fmt.Errorf("environment variable %s=%q: %v", envName(f.Name), v, err)
		}
	})
	if envErr != nil {
		return cfg, envErr
	}
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if cfg.Version {
		return cfg, errVersion
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q: ledgerd takes only flags", fs.Arg(0))
	}
	return cfg, cfg.validate()
}

// validate returns an error naming the flag to fix.
func (c config) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.PGURL == "" {
		bad("-pg-url (%s) is required: the Postgres connection string of the slot's database", envName("pg-url"))
	}
	if c.Slot == "" || c.Publication == "" || c.DB == "" || c.Listen == "" {
		bad("-slot, -publication, -db and -listen must not be empty")
	}
	if err := stream.CheckSlotName(c.Slot); c.Slot != "" && err != nil {
		bad("-slot: %v", err)
	}
	if err := stream.CheckPublicationName(c.Publication); c.Publication != "" && err != nil {
		bad("-publication: %v", err)
	}
	for name, d := range map[string]time.Duration{"ttl": c.TTL, "reconcile-interval": c.ReconcileInterval,
		"status-interval": c.StatusInterval, "stall-grace": c.StallGrace, "challenge-timeout": c.ChallengeTimeout,
		"slow-consumer-timeout": c.SlowConsumerTimeout} {
		if d <= 0 {
			bad("-%s must be a positive duration such as 10s, got %v", name, d)
		}
	}
	if c.HeartbeatInterval < 0 {
		bad("-heartbeat-interval must be 0 (off) or a positive duration, got %v", c.HeartbeatInterval)
	}
	if c.EvictMaxFraction < 0 || c.EvictMaxFraction > 1 {
		bad("-evict-max-fraction must be between 0 and 1, got %v", c.EvictMaxFraction)
	}
	if c.MaxConnections < 1 {
		bad("-max-connections must be at least 1, got %d", c.MaxConnections)
	}
	if c.OutboxBytes < 4096 {
		bad("-outbox-bytes must be at least 4KiB, got %d", c.OutboxBytes)
	}
	if c.FragmentBytes < 1024 {
		bad("-fragment-bytes must be at least 1KiB, got %d", c.FragmentBytes)
	}
	for name, n := range map[string]int64{"max-filter-columns": int64(c.MaxFilterColumns), "max-filter-values": int64(c.MaxFilterValues),
		"max-value-bytes": int64(c.MaxValueBytes), "max-shapes-per-consumer": int64(c.MaxShapesPerConsumer), "max-consumers": int64(c.MaxConsumers)} {
		if n < 1 {
			bad("-%s must be at least 1, got %d", name, n)
		}
	}
	if c.ConsumerRetention <= 0 {
		bad("-consumer-retention must be a positive duration such as 168h, got %v", c.ConsumerRetention)
	}
	if c.ReplicaIdentity != "" && c.ReplicaIdentity != "full" {
		bad(`-replica-identity must be "full" or empty, got %q`, c.ReplicaIdentity)
	}
	return errors.Join(errs...)
}

// limits returns the API's limits.
func (c config) limits() api.Limits {
	return api.Limits{MaxFilterColumns: c.MaxFilterColumns, MaxFilterValues: c.MaxFilterValues, MaxValueBytes: int(c.MaxValueBytes),
		MaxShapesPerConsumer: c.MaxShapesPerConsumer, MaxConsumers: c.MaxConsumers}
}

// byteSize is a flag value in bytes accepting units: 64MiB, 1GB, 512k, 4096.
type byteSize int64

func (b *byteSize) String() string { return strconv.FormatInt(int64(*b), 10) }

func (b *byteSize) Set(s string) error {
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	*b = byteSize(n)
	return nil
}

func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := len(t)
	for i > 0 && (t[i-1] < '0' || t[i-1] > '9') {
		i--
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	mult := map[string]int64{"": 1, "b": 1, "k": 1 << 10, "kb": 1000, "kib": 1 << 10, "m": 1 << 20, "mb": 1000 * 1000,
		"mib": 1 << 20, "g": 1 << 30, "gb": 1000 * 1000 * 1000, "gib": 1 << 30, "t": 1 << 40, "tb": 1000 * 1000 * 1000 * 1000, "tib": 1 << 40}[unit]
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || mult == 0 || n < 0 {
		return 0, fmt.Errorf("%q is not a size: use bytes or a unit such as 64MiB or 1GB", s)
	}
	if n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n * mult, nil
}

// errHelp is returned by parseConfig for -h.
var errHelp = flag.ErrHelp

// errVersion is returned by parseConfig for -version.
var errVersion = errors.New("version")
