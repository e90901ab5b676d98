package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// errSetup marks a table that cannot take the records as configured: a
// setup error (agent.Permanent at Connect).
var errSetup = errors.New("table")

// columns returns the insert's columns in order: the ID, the event time
// (unless time_column is empty), then the configured ones.
func (c *Config) columns() []*column {
	cols := []*column{{name: c.IDColumn, from: fromID, kind: kString, wire: kString}}
	if c.TimeColumn != "" {
		cols = append(cols, &column{name: c.TimeColumn, from: fromTime, kind: kTime, wire: kTime})
	}
	for _, cc := range c.Columns {
		col := &column{name: cc.Name, field: cc.Field, kind: kindOf[cc.Type]}
		switch cc.Field {
		case metaKey:
			col.from = fromKey
		case metaSource:
			col.from = fromSource
		case metaTime:
			col.from = fromEventTime
		case metaRecvTime:
			col.from = fromRecvTime
		case metaRaw:
			col.from = fromRaw
		}
		col.wire = wireOf(col.kind, col.from)
		cols = append(cols, col)
	}
	return cols
}

// quoteIdent quotes a name for SQL.
func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// tableIdent returns the table's quoted name, schema-qualified if given.
func (c *Config) tableIdent() string {
	schema, name, _ := splitTable(c.Table)
	if schema == "" {
		return quoteIdent(name)
	}
	return quoteIdent(schema) + "." + quoteIdent(name)
}

// tableInfo is what the sink learnt about the table at connect.
type tableInfo struct {
	// conflict is the unique key the insert names in ON CONFLICT: the id
	// column, or the id and time columns (a hypertable's key must hold
	// its time column).
	conflict []string
	// created and hypertable say what create_table did on this connect.
	created, hypertable bool
}

// prepare makes sure the table exists (creating it if create_table is set
// and it does not), checks that it has the configured columns and a unique
// key on the id column (alone or with the time column), sets each
// column's cast, and returns the insert statement.
func (s *Sink) prepare(ctx context.Context, conn *pgx.Conn, cols []*column) (string, tableInfo, error) {
	var info tableInfo
	ident := s.cfg.tableIdent()
	var oid *uint32
	if err := conn.QueryRow(ctx, "SELECT to_regclass($1)::oid", ident).Scan(&oid); err != nil {
		return "", info, fmt.Errorf("look up table %s: %w", s.cfg.Table, err)
	}
	if oid == nil {
		if !s.cfg.CreateTable {
			return "", info, fmt.Errorf("%w %s does not exist (create_table is off)", errSetup, s.cfg.Table)
		}
		var err error
		if info, err = s.create(ctx, conn, cols); err != nil {
			return "", info, err
		}
	}
	types := map[string]string{}    // column -> its type as SQL
	category := map[string]string{} // column -> pg_type.typcategory
	rows, err := conn.Query(ctx, `SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), t.typcategory::text
		FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
		WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped`, ident)
	if err != nil {
		return "", info, fmt.Errorf("describe table %s: %w", s.cfg.Table, err)
	}
	for rows.Next() {
		var name, typ, cat string
		if err := rows.Scan(&name, &typ, &cat); err != nil {
			return "", info, fmt.Errorf("describe table %s: %w", s.cfg.Table, err)
		}
		types[name], category[name] = typ, cat
	}
	if err := rows.Err(); err != nil {
		return "", info, fmt.Errorf("describe table %s: %w", s.cfg.Table, err)
	}
	var missing []string
	for _, c := range cols {
		typ, ok := types[c.name]
		if !ok {
			missing = append(missing, c.name)
			continue
		}
		// Text goes into a column of another type (uuid, jsonb, inet,
		// timestamptz) through an explicit cast: the server parses it,
		// and a value it cannot parse is that row's error. Numbers, bools,
		// bytes and times rely on the assignment casts, which refuse
		// what would lose data (a float into an int column rounds, a
		// bigint into an integer column fails when it overflows).
		c.cast = ""
		if c.wire == kString && category[c.name] != "S" {
			c.cast = typ
		}
	}
	if len(missing) > 0 {
		return "", info, fmt.Errorf("%w %s has no column %s", errSetup, s.cfg.Table, strings.Join(missing, ", "))
	}
	info.conflict, err = s.uniqueKey(ctx, conn, ident)
	if err != nil {
		return "", info, err
	}
	return insertSQL(ident, cols, info.conflict), info, nil
}

// uniqueKey finds a unique index (or primary key) of the table on the id
// column alone, or on the id and time columns: the conflict target.
func (s *Sink) uniqueKey(ctx context.Context, conn *pgx.Conn, ident string) ([]string, error) {
	rows, err := conn.Query(ctx, `SELECT array_agg(a.attname::text ORDER BY k.ord)
		FROM pg_index i
		CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
		WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
		GROUP BY i.indexrelid`, ident)
	if err != nil {
		return nil, fmt.Errorf("look up the unique keys of %s: %w", s.cfg.Table, err)
	}
	var keys [][]string
	for rows.Next() {
		var k []string
		if err := rows.Scan(&k); err != nil {
			return nil, fmt.Errorf("look up the unique keys of %s: %w", s.cfg.Table, err)
		}
		keys = append(keys, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("look up the unique keys of %s: %w", s.cfg.Table, err)
	}
	id, tm := s.cfg.IDColumn, s.cfg.TimeColumn
	var best []string
	for _, k := range keys {
		switch {
		case len(k) == 1 && k[0] == id:
			return k, nil
		case len(k) == 2 && tm != "" && slices.Contains(k, id) && slices.Contains(k, tm):
			best = k
		}
	}
	if best != nil {
		return best, nil
	}
	want := "(" + id + ")"
	if tm != "" {
		want += " or (" + id + ", " + tm + ")"
	}
	return nil, fmt.Errorf("%w %s has no unique key on %s: the sink needs one to write each record once", errSetup, s.cfg.Table, want)
}

// create creates the table, in one transaction with making it a
// TimescaleDB hypertable when the extension is installed (and
// time_column is set). A table that another agent created meanwhile is
// taken as it is.
func (s *Sink) create(ctx context.Context, conn *pgx.Conn, cols []*column) (tableInfo, error) {
	var info tableInfo
	var ts *string
	if err := conn.QueryRow(ctx, "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").Scan(&ts); err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return info, fmt.Errorf("look for timescaledb: %w", err)
	}
	hyper := ts != nil && s.cfg.TimeColumn != ""
	if ts != nil && !hyper {
		s.log.Warn("timescaledb is installed but time_column is empty: creating a plain table", "table", s.cfg.Table)
	}
	var b strings.Builder
	b.WriteString("CREATE TABLE ")
	b.WriteString(s.cfg.tableIdent())
	b.WriteString(" (")
	for i, c := range cols {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(quoteIdent(c.name))
		b.WriteString(" ")
		b.WriteString(c.kind.columnType())
		if c.from == fromID || c.from == fromTime {
			b.WriteString(" NOT NULL")
		}
	}
	// A hypertable's unique keys must hold its time column; (time, id)
	// also keeps each chunk's index in time order.
	if hyper {
		b.WriteString(", PRIMARY KEY (" + quoteIdent(s.cfg.TimeColumn) + ", " + quoteIdent(s.cfg.IDColumn) + "))")
	} else {
		b.WriteString(", PRIMARY KEY (" + quoteIdent(s.cfg.IDColumn) + "))")
	}
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, b.String()); err != nil {
			return err
		}
		if hyper {
			if _, err := tx.Exec(ctx, "SELECT create_hypertable($1::regclass, $2::name, if_not_exists => TRUE)", s.cfg.tableIdent(), s.cfg.TimeColumn); err != nil {
				return fmt.Errorf("create_hypertable: %w", err)
			}
		}
		return nil
	})
	var pe *pgconn.PgError
	switch {
	case errors.As(err, &pe) && pe.Code == "42P07": // duplicate_table: created meanwhile
		return info, nil
	case err != nil:
		return info, fmt.Errorf("create table %s: %w", s.cfg.Table, err)
	}
	info.created, info.hypertable = true, hyper
	if hyper {
		s.log.Info("created the table as a TimescaleDB hypertable", "table", s.cfg.Table, "time_column", s.cfg.TimeColumn, "timescaledb", *ts)
	} else {
		s.log.Info("created the table", "table", s.cfg.Table)
	}
	return info, nil
}

// insertSQL is the batch insert: one array parameter per column, unnested
// into rows, inserted unless a row with the same key is there already.
func insertSQL(ident string, cols []*column, conflict []string) string {
	var b strings.Builder
	b.WriteString("INSERT INTO ")
	b.WriteString(ident)
	b.WriteString(" (")
	for i, c := range cols {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(quoteIdent(c.name))
	}
	b.WriteString(") SELECT ")
	for i, c := range cols {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("u" + strconv.Itoa(i))
		if c.cast != "" {
			b.WriteString("::" + c.cast)
		}
	}
	b.WriteString(" FROM unnest(")
	for i, c := range cols {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("$" + strconv.Itoa(i+1) + "::" + c.wire.arrayType())
	}
	b.WriteString(") AS u(")
	for i := range cols {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("u" + strconv.Itoa(i))
	}
	b.WriteString(") ON CONFLICT (")
	for i, k := range conflict {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(quoteIdent(k))
	}
	b.WriteString(") DO NOTHING")
	return b.String()
}
