package postgres

import (
	"bytes"
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/internal/pgtest"
)

// TestSink runs the sink against one real server, each subtest on tables
// of its own.
func TestSink(t *testing.T) {
	srv := pgtest.Start(t, pgtest.Options{})
	url := srv.URL("", "sslmode=disable")
	c := db(t, url)
	ctx := context.Background()

	t.Run("batching", func(t *testing.T) {
		s := newSink(t, config(url, "batched", readingCols...), agent.Env{})
		if err := s.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		// A statement-level trigger counts the INSERT statements.
		exec(t, c, "CREATE TABLE stmts (n int)")
		exec(t, c, `CREATE FUNCTION count_stmt() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO stmts VALUES (1); RETURN NULL; END $$`)
		exec(t, c, "CREATE TRIGGER count_stmt AFTER INSERT ON batched FOR EACH STATEMENT EXECUTE FUNCTION count_stmt()")
		for b := range 4 {
			if err := s.Write(ctx, readings(b*500, 500)); err != nil {
				t.Fatalf("write %d: %v", b, err)
			}
		}
		if got := count(t, c, "SELECT count(*) FROM batched"); got != 2000 {
			t.Errorf("got %d rows, want 2000", got)
		}
		if got := count(t, c, "SELECT count(*) FROM stmts"); got != 4 {
			t.Errorf("got %d insert statements for 4 batches, want 4", got)
		}
		if lost, dups, alien := tally(t, c, "batched", 2000); lost+dups+alien != 0 {
			t.Errorf("got lost %d, duplicates %d, alien %d; want 0", lost, dups, alien)
		}
	})

	t.Run("create table and type mapping", func(t *testing.T) {
		cols := []Column{
			{Name: "f", Type: "float"}, {Name: "fi", Field: "n", Type: "float"},
			{Name: "n", Type: "int"}, {Name: "nf", Field: "whole", Type: "int"},
			{Name: "s", Type: "string"}, {Name: "sn", Field: "f", Type: "string"},
			{Name: "b", Type: "bool"}, {Name: "y", Type: "bytes"},
			{Name: "ts", Type: "time"}, {Name: "j", Type: "json"},
			{Name: "k", Field: "_key"}, {Name: "src", Field: "_source"},
			{Name: "et", Field: "_time"}, {Name: "rt", Field: "_recv_time"}, {Name: "raw", Field: "_raw"},
			{Name: "absent", Type: "float"},
		}
		s := newSink(t, config(url, "public.typed", cols...), agent.Env{})
		if err := s.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		et := time.Date(2026, 3, 1, 12, 0, 0, 123456000, time.UTC)
		rt := et.Add(time.Second)
		rec := agent.Record{ID: "p:1", Key: "dev-1", Source: "sources[0].mqtt", EventTime: et.UnixNano(), RecvTime: rt.UnixNano(), Raw: []byte{0, 1, 2},
			Fields: []agent.Field{agent.Float("f", 21.5), agent.Int("n", 1<<53+1), agent.Float("whole", 42), agent.String("s", "zürich"),
				agent.Bool("b", true), agent.Bytes("y", []byte{0xff, 0}), agent.String("ts", "2026-03-01T13:00:00+01:00"), agent.String("j", `{"a":[1,2]}`)}}
		if err := s.Write(ctx, []agent.Record{rec}); err != nil {
			t.Fatal(err)
		}
		// The types create_table chose.
		want := map[string]string{"id": "text", "time": "timestamp with time zone", "f": "double precision", "fi": "double precision",
			"n": "bigint", "nf": "bigint", "s": "text", "sn": "text", "b": "boolean", "y": "bytea", "ts": "timestamp with time zone",
			"j": "jsonb", "k": "text", "src": "text", "et": "timestamp with time zone", "rt": "timestamp with time zone", "raw": "bytea", "absent": "double precision"}
		rows, err := c.Query(ctx, "SELECT column_name::text, data_type::text FROM information_schema.columns WHERE table_name = 'typed'")
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for rows.Next() {
			var n, ty string
			if err := rows.Scan(&n, &ty); err != nil {
				t.Fatal(err)
			}
			got[n] = ty
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("column %s: got type %q, want %q", k, got[k], v)
			}
		}
		if len(got) != len(want) {
			t.Errorf("got columns %v, want %v", got, want)
		}
		var (
			id, s1, sn, k, src, j string
			tm, ts, etv, rtv      time.Time
			f, fi                 float64
			n, nf                 int64
			b                     bool
			y, raw                []byte
			absent                pgtype.Float8
		)
		err = c.QueryRow(ctx, `SELECT id, time, f, fi, n, nf, s, sn, b, y, ts, j::text, k, src, et, rt, raw, absent FROM typed`).
			Scan(&id, &tm, &f, &fi, &n, &nf, &s1, &sn, &b, &y, &ts, &j, &k, &src, &etv, &rtv, &raw, &absent)
		if err != nil {
			t.Fatal(err)
		}
		check := func(name string, ok bool, got any) {
			if !ok {
				t.Errorf("%s: got %v", name, got)
			}
		}
		check("id", id == "p:1", id)
		check("time (event time)", tm.Equal(et), tm)
		check("f", f == 21.5, f)
		check("fi (int into float)", fi == float64(1<<53+1), fi)
		check("n", n == 1<<53+1, n)
		check("nf (integral float into int)", nf == 42, nf)
		check("s", s1 == "zürich", s1)
		check("sn (float as text)", sn == "21.5", sn)
		check("b", b, b)
		check("y", bytes.Equal(y, []byte{0xff, 0}), y)
		check("ts (text parsed by the server)", ts.Equal(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)), ts)
		check("j", j == `{"a": [1, 2]}`, j)
		check("k", k == "dev-1", k)
		check("src", src == "sources[0].mqtt", src)
		check("et", etv.Equal(et), etv)
		check("rt", rtv.Equal(rt), rtv)
		check("raw", bytes.Equal(raw, []byte{0, 1, 2}), raw)
		check("absent (NULL)", !absent.Valid, absent)
	})

	t.Run("replay writes each record once", func(t *testing.T) {
		cfg := config(url, "replayed", readingCols...)
		s := newSink(t, cfg, agent.Env{})
		if err := s.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		if err := s.Write(ctx, readings(0, 300)); err != nil {
			t.Fatal(err)
		}
		// The same records again, from the same sink and from a new one (an
		// agent restarted after a crash before its cursor moved), and a
		// batch that overlaps.
		if err := s.Write(ctx, readings(0, 300)); err != nil {
			t.Fatal(err)
		}
		s2 := newSink(t, cfg, agent.Env{})
		if err := s2.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		if err := s2.Write(ctx, readings(200, 200)); err != nil {
			t.Fatal(err)
		}
		if got := count(t, c, "SELECT count(*) FROM replayed"); got != 400 {
			t.Errorf("got %d rows, want 400", got)
		}
		if lost, dups, alien := tally(t, c, "replayed", 400); lost+dups+alien != 0 {
			t.Errorf("got lost %d, duplicates %d, alien %d; want 0", lost, dups, alien)
		}
		if got, want := s.duplicates.Get()+s2.duplicates.Get(), uint64(400); got != want {
			t.Errorf("got %d duplicates counted, want %d", got, want)
		}
	})

	t.Run("bad rows to dead letters", func(t *testing.T) {
		exec(t, c, `CREATE TABLE strict (id text PRIMARY KEY, time timestamptz NOT NULL, i int NOT NULL, temp real CHECK (temp > -100), small smallint, label varchar(8))`)
		cfg := config(url, "strict", Column{Name: "i", Type: "int"}, Column{Name: "temp", Type: "float"}, Column{Name: "small", Type: "int"}, Column{Name: "label", Type: "string"})
		cfg.CreateTable = false
		s := newSink(t, cfg, agent.Env{})
		if err := s.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		recs := readings(0, 200)
		bad := map[int]string{
			7:   "23514",             // check constraint
			50:  "23502",             // not null: no field i
			51:  "22003",             // smallint out of range
			120: "22001",             // too long for varchar(8)
			121: "22021",             // NUL in text
			199: "is string, column", // refused before sending: a string for a float column
		}
		recs[7].Set(agent.Float("temp", -200))
		recs[50].Delete("i")
		recs[51].Set(agent.Int("small", 70000))
		recs[120].Set(agent.String("label", "much too long"))
		recs[121].Set(agent.String("label", "a\x00b"))
		recs[199].Set(agent.String("temp", "warm"))
		err := s.Write(ctx, recs)
		var rej *agent.RejectedError
		if !errors.As(err, &rej) {
			t.Fatalf("got %v, want a RejectedError", err)
		}
		if len(rej.Index) != len(bad) {
			t.Errorf("got %d rows refused (%v), want %d", len(rej.Index), rej.Index, len(bad))
		}
		for k, i := range rej.Index {
			want, ok := bad[i]
			if !ok || !strings.Contains(rej.Errs[k].Error(), want) {
				t.Errorf("row %d refused with %v; want it refused for %q", i, rej.Errs[k], want)
			}
		}
		if got := count(t, c, "SELECT count(*) FROM strict"); got != 200-int64(len(bad)) {
			t.Errorf("got %d rows, want %d", got, 200-len(bad))
		}
		for i := range bad {
			if n := count(t, c, "SELECT count(*) FROM strict WHERE id = $1", recs[i].ID); n != 0 {
				t.Errorf("bad row %d is in the table", i)
			}
		}
	})

	t.Run("setup errors", func(t *testing.T) {
		exec(t, c, "CREATE TABLE nokey (id text, time timestamptz, i bigint)")
		wrongPW := strings.Replace(url, pgtest.Password, "not-the-"+pgtest.Password, 1)
		pwCfg := config(strings.Replace(url, ":"+pgtest.Password, "", 1), "x", readingCols...)
		pwCfg.Password = "wrong-" + pgtest.Password
		for _, tc := range []struct {
			name string
			cfg  Config
			want string
		}{
			{"wrong password in the url", config(wrongPW, "x", readingCols...), "SQLSTATE 28P01"},
			{"wrong password key", pwCfg, "SQLSTATE 28P01"},
			{"no such database", config(srv.URL("nodb", "sslmode=disable"), "x", readingCols...), "SQLSTATE 3D000"},
			{"no table, create_table off", func() Config { c := config(url, "missing", readingCols...); c.CreateTable = false; return c }(), "missing does not exist"},
			{"no unique key on id", func() Config {
				c := config(url, "nokey", Column{Name: "i", Type: "int"})
				c.CreateTable = false
				return c
			}(), "nokey has no unique key on (id) or (id, time)"},
			{"no such column", config(url, "batched", Column{Name: "i", Type: "int"}, Column{Name: "humidity", Type: "float"}), "batched has no column humidity"},
			{"a type the column does not take", config(url, "batched", Column{Name: "i", Type: "bool"}), "SQLSTATE 42804"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				s := newSink(t, tc.cfg, agent.Env{})
				err := s.Connect(ctx)
				if err == nil || !agent.IsPermanent(err) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("got %v, want a permanent error containing %q", err, tc.want)
				}
				noSecret(t, "the error", err.Error())
			})
		}
	})

	t.Run("unreachable while the server hangs", func(t *testing.T) {
		cfg := config(url, "hang", readingCols...)
		cfg.Timeout, cfg.UnreachableAfter = 3*time.Second, 500*time.Millisecond
		reports := make(chan error, 4)
		s := newSink(t, cfg, agent.Env{Unreachable: func(err error) { reports <- err }})
		if err := s.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		srv.Pause()
		start := time.Now()
		err := s.Write(ctx, readings(0, 10))
		took := time.Since(start)
		srv.Resume()
		close(reports)
		var got []error
		for r := range reports {
			got = append(got, r)
		}
		if err == nil || agent.IsPermanent(err) {
			t.Errorf("write: got %v, want a retryable error after the timeout", err)
		}
		if len(got) != 1 || !strings.Contains(got[0].Error(), "no answer from the server") {
			t.Errorf("got reports %v, want one saying the server does not answer", got)
		}
		t.Logf("write returned after %s: %v", took.Round(10*time.Millisecond), err)
		// The next write goes through on a new connection.
		if err := s.Write(ctx, readings(0, 10)); err != nil {
			t.Fatalf("write after resume: %v", err)
		}
		if got := count(t, c, "SELECT count(*) FROM hang"); got != 10 {
			t.Errorf("got %d rows, want 10", got)
		}
	})

	t.Run("timescaledb detected", func(t *testing.T) {
		// TimescaleDB is not packaged for this machine: the test stands in
		// for it with a catalog entry for the extension and a
		// create_hypertable that notes its call, so that the detection,
		// the call and the key a hypertable needs are what is checked.
		exec(t, c, "CREATE DATABASE tsdb")
		tc := db(t, srv.URL("tsdb", "sslmode=disable"))
		exec(t, tc, `INSERT INTO pg_extension (oid, extname, extowner, extnamespace, extrelocatable, extversion)
			VALUES (999999, 'timescaledb', 10, 2200, false, '2.99.0')`)
		exec(t, tc, "CREATE TABLE hypercalls (rel text, col text, ine bool)")
		exec(t, tc, `CREATE FUNCTION create_hypertable(relation regclass, time_column_name name, if_not_exists boolean DEFAULT false)
			RETURNS void LANGUAGE sql AS $$ INSERT INTO hypercalls VALUES (relation::text, time_column_name, if_not_exists) $$`)
		cfg := config(srv.URL("tsdb", "sslmode=disable"), "metrics", readingCols...)
		s := newSink(t, cfg, agent.Env{})
		if err := s.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		if !s.table.created || !s.table.hypertable {
			t.Errorf("got %+v, want the table created as a hypertable", s.table)
		}
		var rel, col string
		var ine bool
		if err := tc.QueryRow(ctx, "SELECT rel, col, ine FROM hypercalls").Scan(&rel, &col, &ine); err != nil {
			t.Fatalf("create_hypertable was not called: %v", err)
		}
		if rel != `metrics` || col != "time" || !ine {
			t.Errorf("got create_hypertable(%s, %s, if_not_exists => %v), want (metrics, time, true)", rel, col, ine)
		}
		if strings.Join(s.table.conflict, ",") != "time,id" {
			t.Errorf("got conflict target %v, want (time, id)", s.table.conflict)
		}
		for range 2 {
			if err := s.Write(ctx, readings(0, 100)); err != nil {
				t.Fatal(err)
			}
		}
		if got := count(t, tc, "SELECT count(*) FROM metrics"); got != 100 {
			t.Errorf("got %d rows after a replay, want 100", got)
		}
	})
}

func TestIntegralFloatBounds(t *testing.T) {
	col := &column{name: "n", field: "n", kind: kInt, wire: kInt}
	for _, tc := range []struct {
		v  float64
		ok bool
	}{{42, true}, {-1, true}, {1.5, false}, {math.Inf(1), false}, {math.NaN(), false}, {1 << 63, false}, {-(1 << 63), true}} {
		col.reset()
		r := agent.Record{Fields: []agent.Field{agent.Float("n", tc.v)}}
		if err := col.add(&r); (err == nil) != tc.ok {
			t.Errorf("%v: got %v, want ok %v", tc.v, err, tc.ok)
		}
	}
}
