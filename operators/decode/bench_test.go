package decode

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/pspf/pspf-edge/agent"
)

// BenchmarkJSONBatch decodes batches of 500 sensor payloads of about 200
// bytes (the end-to-end benchmark's), each record arriving with its topic
// field and room for the decoded ones, as the agent's runner hands them over:
//
//	go test -run '^$' -bench JSONBatch -benchmem ./operators/decode
//
// The figures are per record.
func BenchmarkJSONBatch(b *testing.B) {
	d, _ := decoder(b, func(c *Config) { c.TimeField = "ts" })
	const n = 500
	pays := make([][]byte, n)
	for i := range pays {
		pays[i] = []byte(`{"seq":` + strconv.Itoa(1000000+i) + `,"sent_us":1764300000123456,"ts":1764300000123,"temp":` +
			strconv.FormatFloat(15+float64(i%200)/10, 'f', 1, 64) + `,"pad":"` + strings.Repeat("x", 100) + `"}`)
	}
	fields := make([]agent.Field, n*8)
	batch := &agent.Batch{Records: make([]agent.Record, n)}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += n {
		batch.Reset()
		batch.Records = batch.Records[:n]
		for j := range batch.Records {
			f := append(fields[j*8:j*8:(j+1)*8], agent.String("device", "d"+strconv.Itoa(j%100)))
			batch.Records[j] = agent.Record{Raw: pays[j], Fields: f}
		}
		if err := d.Process(ctx, batch); err != nil || len(batch.Records) != n {
			b.Fatalf("got %d records, err %v; want %d, nil", len(batch.Records), err, n)
		}
	}
}
