package postgres

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/internal/pgtest"
)

// db opens a connection for the test's own queries.
func db(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func exec(t testing.TB, c *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := c.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func count(t testing.TB, c *pgx.Conn, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := c.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// newSink builds a sink with the config cfg after the defaults were
// applied and validated as a pipeline file would be.
func newSink(t testing.TB, cfg Config, env agent.Env) *Sink {
	t.Helper()
	if env.Pipeline == "" {
		env.Pipeline = "p"
	}
	s, err := New(cfg, env)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

// config returns the defaults with url, table and create_table set.
func config(url, table string, cols ...Column) Config {
	c := *Defaults()
	c.URL, c.Table, c.CreateTable, c.Columns = url, table, true, cols
	for i := range c.Columns {
		c.Columns[i].normalize()
	}
	return c
}

// readings returns n records with IDs p:first.. and fields i and temp.
func readings(first, n int) []agent.Record {
	recs := make([]agent.Record, n)
	for k := range recs {
		i := first + k
		recs[k] = agent.Record{
			ID: fmt.Sprintf("p:%d", i), Key: fmt.Sprintf("dev-%d", i%4), EventTime: time.Unix(1700000000, 0).Add(time.Duration(i) * time.Millisecond).UnixNano(),
			Fields: []agent.Field{agent.Int("i", int64(i)), agent.Float("temp", 20+float64(i%10)/4)},
		}
	}
	return recs
}

var readingCols = []Column{{Name: "i", Type: "int"}, {Name: "temp", Type: "float"}, {Name: "device", Field: "_key"}}

// tally counts the table's rows by payload (field i): how many distinct
// values of [0, total) are there, how many rows are duplicates, and how
// many hold a value outside [0, total).
func tally(t testing.TB, c *pgx.Conn, table string, total int) (lost, dups, alien int64) {
	t.Helper()
	rows, err := c.Query(context.Background(), "SELECT i, count(*) FROM "+table+" GROUP BY i")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int64]bool{}
	for rows.Next() {
		var i, n int64
		if err := rows.Scan(&i, &n); err != nil {
			t.Fatal(err)
		}
		if i < 0 || i >= int64(total) {
			alien += n
			continue
		}
		seen[i] = true
		dups += n - 1
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return int64(total - len(seen)), dups, alien
}

// noSecret fails the test if text holds the password.
func noSecret(t testing.TB, what, text string) {
	t.Helper()
	if strings.Contains(text, pgtest.Password) {
		t.Errorf("%s shows the password: %s", what, text)
	}
}
