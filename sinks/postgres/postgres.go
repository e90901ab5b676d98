// Package postgres is a sink that inserts records into a PostgreSQL (or
// TimescaleDB) table, one row per record, with the record's stable ID as
// the table's unique key: a batch written again after a crash or a lost
// connection inserts only the rows that are not there yet, so each record
// is in the table once.
package postgres

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pspf/pspf-edge/agent"
)

// Factory returns the registry entry of the PostgreSQL sink.
func Factory() agent.Factory[agent.Sink] {
	return agent.Typed[agent.Sink]("inserts rows into a PostgreSQL or TimescaleDB table, each record once (its ID is the unique key)", Defaults, func(c *Config, env agent.Env) (agent.Sink, error) {
		return New(*c, env)
	})
}

// Sink inserts each batch with one statement over one connection. Rows
// whose ID is in the table already are skipped (ON CONFLICT DO NOTHING):
// a replay writes nothing twice. A row the server refuses for itself (a
// constraint, a value that does not fit its column) is found by splitting
// the batch and goes to the dead letters with the server's reason, while
// the other rows are written; any other error (the connection lost, the
// server shutting down or in recovery, a serialization failure, too many
// connections, a missing privilege) is retried, the sink shown offline
// meanwhile. Write is called from one goroutine at a time.
type Sink struct {
	cfg Config
	env agent.Env
	log *slog.Logger

	conn  *pgx.Conn
	table tableInfo // what the last connect found or did
	cols  []*column // the batch's values, column by column
	part  []*column // a part of the batch, while bad rows are looked for
	idx   []int     // the batch's rows that are sent (not refused by add)
	dead  []int     // rows refused
	errs  []error   // and why

	inserted, duplicates, reconnects *agent.Counter
}

// stmt names the prepared insert on each connection.
const stmt = "pspf_insert"

// New returns a PostgreSQL sink. It opens no connection.
func New(cfg Config, env agent.Env) (*Sink, error) {
	env = env.WithDefaults()
	cfg.Columns = append([]Column(nil), cfg.Columns...)
	for i := range cfg.Columns {
		cfg.Columns[i].normalize()
		if _, ok := kindOf[cfg.Columns[i].Type]; !ok {
			return nil, fmt.Errorf("postgres sink: column %q: unknown type %q", cfg.Columns[i].Name, cfg.Columns[i].Type)
		}
	}
	s := &Sink{cfg: cfg, env: env, log: env.Logger}
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, errors.New("postgres sink: url: not a valid URL")
	}
	// The password field is a secret by its tag; the url's password too,
	// and the url itself, which pgx's errors may quote.
	env.Secrets.Add(cfg.Password)
	if pw, ok := u.User.Password(); ok && pw != "" {
		env.Secrets.Add(pw, cfg.URL)
	}
	if q := u.Query(); q.Get("sslmode") == "require" && cfg.TLS.CAFile == "" && q.Get("sslrootcert") == "" {
		// libpq's require encrypts without checking whom it talks to;
		// with a CA file it verifies as verify-ca does.
		s.log.Warn("tls: sslmode=require without a CA file does not verify the server's certificate, so anyone on the path can read and change this link; set tls.ca_file or sslmode=verify-full",
			"component", "postgres", "setting", "url.sslmode")
	}
	s.cols = cfg.columns()
	for _, c := range s.cols {
		s.part = append(s.part, &column{name: c.name, from: c.from, kind: c.kind, wire: c.wire})
	}
	s.inserted = env.Counter("pspf_postgres_rows_total", "result", "inserted")
	s.duplicates = env.Counter("pspf_postgres_rows_total", "result", "duplicate")
	s.reconnects = env.Counter("pspf_postgres_connects_total")
	return s, nil
}

// Connect connects and checks the table (creating it if create_table is
// set). Wrong credentials, a certificate refused, a database, table or
// column that does not exist, a table without a unique key on the id:
// setup errors (agent.Permanent). Anything else (no answer, the server
// starting up) is retried by the runner.
func (s *Sink) Connect(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	if err := s.connect(ctx); err != nil {
		err = s.redact(err)
		if setupError(err) {
			return agent.Permanent(err)
		}
		return err
	}
	return nil
}

// connect opens a connection and prepares the insert on it.
func (s *Sink) connect(ctx context.Context) error {
	s.closeConn()
	pc, err := s.pgConfig()
	if err != nil {
		return err
	}
	conn, err := pgx.ConnectConfig(ctx, pc)
	if err != nil {
		return fmt.Errorf("postgres sink: connect: %w", err)
	}
	s.reconnects.Inc()
	sql, info, err := s.prepare(ctx, conn, s.cols)
	if err == nil {
		_, err = conn.Prepare(ctx, stmt, sql)
		if err != nil {
			err = fmt.Errorf("prepare the insert into %s: %w", s.cfg.Table, err)
		}
	}
	if err != nil {
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = conn.Close(closeCtx)
		cancel()
		return fmt.Errorf("postgres sink: %w", err)
	}
	s.table = info
	s.conn = conn
	return nil
}

// pgConfig builds pgx's config from the url, the password and the TLS
// files, read again at every connection (a renewed certificate is taken).
func (s *Sink) pgConfig() (*pgx.ConnConfig, error) {
	u, err := url.Parse(s.cfg.URL)
	if err != nil {
		return nil, agent.Permanent(errors.New("postgres sink: url: not a valid URL"))
	}
	q := u.Query()
	t := s.cfg.TLS
	for param, file := range map[string]string{"sslrootcert": t.CAFile, "sslcert": t.CertFile, "sslkey": t.KeyFile} {
		if file != "" {
			q.Set(param, file)
		}
	}
	if q.Get("sslmode") == "" && (t.set() || remoteHost(u)) {
		// libpq's default, prefer, falls back to plain text without a
		// word; to a server on another machine the sink verifies instead
		// (sslmode=disable in the url says plain text is meant).
		q.Set("sslmode", "verify-full")
	}
	u.RawQuery = q.Encode()
	pc, err := pgx.ParseConfig(u.String())
	if err != nil {
		// pgx's parse errors mask the password on a best-effort basis
		// only: say what is wrong without the url.
		var pe *pgconn.ParseConfigError
		if errors.As(err, &pe) {
			err = errors.Unwrap(pe)
		}
		return nil, agent.Permanent(fmt.Errorf("postgres sink: url: %w", s.redact(err)))
	}
	if s.cfg.Password != "" {
		pc.Password = s.cfg.Password
	}
	if _, ok := pc.RuntimeParams["application_name"]; !ok {
		pc.RuntimeParams["application_name"] = "pspf-edge " + s.env.Pipeline
	}
	return pc, nil
}

// Write inserts the batch: nil once every row is in the table (or was
// there already), a RejectedError naming the rows the server refused, or
// an error to retry the whole batch with.
func (s *Sink) Write(ctx context.Context, recs []agent.Record) error {
	if len(recs) == 0 {
		return nil
	}
	s.fill(recs)
	w := s.watch(len(recs))
	err := s.write(ctx)
	w.stop()
	if err != nil {
		// The retry starts on a new connection: the old one may be
		// broken half way through a message, or to a server that went.
		s.closeConn()
		return s.redact(err)
	}
	if len(s.dead) > 0 {
		errs := make([]error, len(s.errs))
		for i, e := range s.errs {
			errs[i] = s.redact(e)
		}
		return &agent.RejectedError{Index: append([]int(nil), s.dead...), Errs: errs}
	}
	return nil
}

// fill converts the records into the columns' values; a record that does
// not fit is refused at once.
func (s *Sink) fill(recs []agent.Record) {
	s.idx, s.dead, s.errs = s.idx[:0], s.dead[:0], s.errs[:0]
	for _, c := range s.cols {
		c.reset()
	}
	for i := range recs {
		n := len(s.idx)
		for j, c := range s.cols {
			if err := c.add(&recs[i]); err != nil {
				for _, prev := range s.cols[:j] {
					prev.truncate(n)
				}
				s.dead = append(s.dead, i)
				s.errs = append(s.errs, fmt.Errorf("postgres sink: %w", err))
				break
			}
		}
		if len(s.dead) == 0 || s.dead[len(s.dead)-1] != i {
			s.idx = append(s.idx, i)
		}
	}
}

// write sends the filled batch within the write timeout, connecting
// first if needed.
func (s *Sink) write(ctx context.Context) error {
	if len(s.idx) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	if s.conn == nil || s.conn.IsClosed() {
		if err := s.connect(ctx); err != nil {
			return err
		}
	}
	all := make([]int, len(s.idx))
	for i := range all {
		all[i] = i
	}
	return s.insert(ctx, all)
}

// insert writes rows rows (positions in the filled columns). When the
// server refuses the statement for a row's sake (SQLSTATE class 22, data
// exception, or 23, integrity constraint), it splits the rows in halves
// and tries each, down to single rows, which are refused: k bad rows of n
// cost about 2k·log2(n) statements and the good rows are written. Each
// statement commits on its own; a retry after a failure part way is
// harmless, since rows already written are skipped.
func (s *Sink) insert(ctx context.Context, rows []int) error {
	n, err := s.exec(ctx, rows)
	if err == nil {
		s.inserted.Add(int(n))
		s.duplicates.Add(len(rows) - int(n))
		return nil
	}
	if !rowError(err) {
		return fmt.Errorf("postgres sink: insert %d rows: %w", len(rows), err)
	}
	if len(rows) == 1 {
		s.dead = append(s.dead, s.idx[rows[0]])
		s.errs = append(s.errs, fmt.Errorf("postgres sink: row refused: %w", describe(err)))
		return nil
	}
	half := len(rows) / 2
	if err := s.insert(ctx, rows[:half]); err != nil {
		return err
	}
	return s.insert(ctx, rows[half:])
}

// exec runs the insert for rows and returns how many were inserted.
func (s *Sink) exec(ctx context.Context, rows []int) (int64, error) {
	args := make([]any, len(s.cols))
	if len(rows) == len(s.idx) {
		for i, c := range s.cols {
			args[i] = c.values()
		}
	} else {
		for i, c := range s.part {
			c.reset()
			c.pick(s.cols[i], rows)
			args[i] = c.values()
		}
	}
	tag, err := s.conn.Exec(ctx, stmt, args...)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

// rowError reports whether the server refused a statement because of a
// value in it: a data exception (class 22: a number out of range, text
// that does not parse, a NUL in a string) or an integrity constraint
// (class 23: NOT NULL, CHECK, a foreign key, another unique key).
func rowError(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	return strings.HasPrefix(pe.Code, "22") || strings.HasPrefix(pe.Code, "23")
}

// setupError reports whether a connect failed for a reason that waiting
// does not fix: credentials refused (class 28), no such database (3D000),
// a privilege missing or a column of a type the field cannot go into
// (class 42), a certificate refused, or the table not as configured.
func setupError(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return strings.HasPrefix(pe.Code, "28") || pe.Code == "3D000" || strings.HasPrefix(pe.Code, "42")
	}
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	var cv *tls.CertificateVerificationError
	return errors.Is(err, errSetup) || errors.As(err, &ua) || errors.As(err, &he) || errors.As(err, &ci) || errors.As(err, &cv) || agent.IsPermanent(err)
}

// describe adds the server's detail (which row, which constraint) to its
// message.
func describe(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Detail != "" {
		return fmt.Errorf("%w: %s", err, pe.Detail)
	}
	return err
}

// redact masks the agent's secrets (the password, the url that may carry
// one) in err's text: pgx's connection errors can quote the connection
// settings. The runner masks them too; the sink's own log lines need it.
func (s *Sink) redact(err error) error {
	return s.env.Secrets.Redact(err)
}

// writeWatch tells the runner, once per write, that the server has not
// answered for unreachable_after while the write still waits (a server
// that hangs, packets black-holed). It is stopped, and its call waited
// for, before Write returns.
type writeWatch struct {
	mu      sync.Mutex
	stopped bool
	timer   *time.Timer
}

func (s *Sink) watch(n int) *writeWatch {
	w := &writeWatch{}
	if s.env.Unreachable == nil || s.cfg.UnreachableAfter <= 0 {
		return w
	}
	after := s.cfg.UnreachableAfter
	w.timer = time.AfterFunc(after, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if !w.stopped {
			s.env.Unreachable(fmt.Errorf("postgres sink: no answer from the server for %s, %d rows waiting (retrying until timeout)", after, n))
		}
	})
	return w
}

func (w *writeWatch) stop() {
	if w.timer != nil {
		w.timer.Stop()
	}
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
}

func (s *Sink) closeConn() {
	if s.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_ = s.conn.Close(ctx)
	cancel()
	s.conn = nil
}

// Close closes the connection. It is idempotent.
func (s *Sink) Close(context.Context) error {
	s.closeConn()
	return nil
}
