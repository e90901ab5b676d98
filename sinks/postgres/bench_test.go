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

// BenchmarkInsert compares ways to insert a batch of 500 rows with ON
// CONFLICT DO NOTHING into the same table on a server with fsync on: the
// sink's unnest of array parameters, a multi-row VALUES list, and a binary
// COPY into a temporary table followed by INSERT ... SELECT ... ON CONFLICT
// DO NOTHING in one transaction. "new" batches insert every row; "replay"
// batches conflict on every row (a replay after a crash).
//
//	go test -run '^$' -bench Insert -benchtime 2000x ./sinks/postgres/
func BenchmarkInsert(b *testing.B) {
	srv := pgtest.Start(b, pgtest.Options{Fsync: true})
	url := srv.URL("", "sslmode=disable")
	ctx := context.Background()
	const n = 500
	for _, method := range []string{"unnest", "values", "copy"} {
		for _, mode := range []string{"new", "replay"} {
			b.Run(method+"/"+mode, func(b *testing.B) {
				table := "bench_" + method + "_" + mode
				cfg := config(url, table, readingCols...)
				s := newSink(b, cfg, agent.Env{Pipeline: "p"})
				if err := s.Connect(ctx); err != nil {
					b.Fatal(err)
				}
				ins := inserter(b, method, s, table)
				recs := readings(0, n)
				if mode == "replay" {
					if err := ins(ctx, recs); err != nil {
						b.Fatal(err)
					}
				}
				b.ResetTimer()
				start := time.Now()
				for i := 0; i < b.N; i++ {
					if mode == "new" {
						recs = readings(i*n, n)
					}
					if err := ins(ctx, recs); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N*n)/time.Since(start).Seconds(), "rows/s")
			})
		}
	}
}

// inserter returns the insert of one batch by method.
func inserter(b *testing.B, method string, s *Sink, table string) func(context.Context, []agent.Record) error {
	switch method {
	case "unnest":
		return s.Write
	case "values":
		// One placeholder per value: at most 65535 per statement.
		return func(ctx context.Context, recs []agent.Record) error {
			var sql strings.Builder
			sql.WriteString("INSERT INTO " + table + " (id, time, i, temp, device) VALUES ")
			args := make([]any, 0, 5*len(recs))
			for k, r := range recs {
				if k > 0 {
					sql.WriteString(",")
				}
				p := 5 * k
				fmt.Fprintf(&sql, "($%d,$%d,$%d,$%d,$%d)", p+1, p+2, p+3, p+4, p+5)
				args = append(args, r.ID, r.Time(), r.Field("i").Int, r.Field("temp").Float, r.Key)
			}
			sql.WriteString(" ON CONFLICT (id) DO NOTHING")
			_, err := s.conn.Exec(ctx, sql.String(), args...)
			return err
		}
	case "copy":
		stage := table + "_stage"
		if _, err := s.conn.Exec(context.Background(), "CREATE TEMP TABLE "+stage+" (LIKE "+table+") ON COMMIT DELETE ROWS"); err != nil {
			b.Fatal(err)
		}
		rows := make([][]any, 0, 500)
		return func(ctx context.Context, recs []agent.Record) error {
			rows = rows[:0]
			for _, r := range recs {
				rows = append(rows, []any{r.ID, r.Time(), r.Field("i").Int, r.Field("temp").Float, r.Key})
			}
			return pgx.BeginFunc(ctx, s.conn, func(tx pgx.Tx) error {
				if _, err := tx.CopyFrom(ctx, pgx.Identifier{stage}, []string{"id", "time", "i", "temp", "device"}, pgx.CopyFromRows(rows)); err != nil {
					return err
				}
				_, err := tx.Exec(ctx, "INSERT INTO "+table+" SELECT * FROM "+stage+" ON CONFLICT (id) DO NOTHING")
				return err
			})
		}
	}
	b.Fatalf("unknown method %s", method)
	return nil
}
