// Package operators_test holds the benchmarks of the stateless operator
// chain that issue 2 holds the code to: filter + map on decoded records at
// 3 M records/s or more with at most one allocation per record, and json
// decode + filter + map at 300 k records/s or more, on one core
// (go test -cpu 1 -run '^$' -bench . -benchmem ./operators).
//
// Each benchmark op is one record; records go through the chain in batches
// of batchSize, as the runner moves them. Besides records/s of wall time,
// the benchmarks report records/cpu-s, per second of their thread's CPU time,
// which holds steady when other work shares the machine.
package operators_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/operators/decode"
	"github.com/pspf/pspf-edge/operators/filter"
	"github.com/pspf/pspf-edge/operators/mapop"
)

const batchSize = 1000

func chain(b *testing.B, env agent.Env) []agent.Operator {
	b.Helper()
	f, err := filter.New(&filter.Config{Expr: "temp > -50"}, env)
	if err != nil {
		b.Fatal(err)
	}
	m, err := mapop.New(&mapop.Config{Set: map[string]string{"temp_f": "temp * 1.8 + 32"}}, env)
	if err != nil {
		b.Fatal(err)
	}
	return []agent.Operator{f, m}
}

// decoded returns a record as the decode operator leaves it: its fields with
// room for what map adds.
func decoded(i int) []agent.Field {
	fs := make([]agent.Field, 0, 7)
	return append(fs,
		agent.String("sensor", fmt.Sprintf("s-%d", i%64)),
		agent.Float("temp", float64(i%200)-60), // 5% below -50: filtered
		agent.Float("hum", 40.5),
		agent.Int("ts", 1700000000125+int64(i)),
		agent.Int("seq", int64(i)),
	)
}

func run(b *testing.B, ops []agent.Operator, fill func(recs []agent.Record, first int)) {
	ctx := context.Background()
	recs := make([]agent.Record, batchSize)
	batch := &agent.Batch{}
	defer lockThread()()
	b.ReportAllocs()
	b.ResetTimer()
	cpu0, cpuOK := threadCPU()
	done := 0
	for done < b.N {
		n := min(batchSize, b.N-done)
		fill(recs[:n], done)
		batch.Records = recs[:n]
		batch.Dead = batch.Dead[:0]
		for _, op := range ops {
			if err := op.Process(ctx, batch); err != nil {
				b.Fatal(err)
			}
		}
		if len(batch.Dead) > 0 {
			b.Fatalf("dead record: %v", batch.Dead[0].Err)
		}
		done += n
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	if cpu1, ok := threadCPU(); ok && cpuOK && cpu1 > cpu0 {
		// Of the benchmark's own thread: what one core does when the
		// machine is shared. GC workers on other threads are not included.
		b.ReportMetric(float64(b.N)/(cpu1-cpu0).Seconds(), "records/cpu-s")
	}
}

func BenchmarkFilterMap(b *testing.B) {
	tmpl := make([][]agent.Field, batchSize)
	for i := range tmpl {
		tmpl[i] = decoded(i)
	}
	run(b, chain(b, agenttest.Env()), func(recs []agent.Record, first int) {
		// Records from the decoder: the same fields again, in the slots' own arrays.
		for i := range recs {
			recs[i].Fields = append(recs[i].Fields[:0], tmpl[i]...)
		}
	})
}

func BenchmarkJSONDecodeFilterMap(b *testing.B) {
	payloads := make([][]byte, batchSize)
	for i := range payloads {
		payloads[i] = fmt.Appendf(nil, `{"sensor":"s-%d","temp":%.1f,"hum":40.5,"ts":%d,"seq":%d,"gps":{"lat":52.52,"lon":13.40}}`,
			i%64, float64(i%200)-60.5, 1700000000125+int64(i), i)
	}
	env := agenttest.Env()
	c := decode.DefaultConfig()
	c.KeyField, c.TimeField = "sensor", "ts"
	d, err := decode.New(c, env)
	if err != nil {
		b.Fatal(err)
	}
	ops := append([]agent.Operator{d}, chain(b, env)...)
	run(b, ops, func(recs []agent.Record, first int) {
		// Fresh records, as a source hands them over: the decoder allocates.
		for i := range recs {
			recs[i] = agent.Record{Raw: payloads[i]}
		}
	})
}
