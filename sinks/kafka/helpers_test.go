package kafka

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pspf/pspf-edge/agent"
)

func testEnv() agent.Env {
	return agent.Env{Pipeline: "p", Component: "kafka", AgentName: "gw1", Now: time.Now}
}

func testConfig(addr, topic string) Config {
	c := *Defaults()
	c.Brokers = []string{addr}
	c.Topic = topic
	c.Linger = time.Millisecond
	c.WriteTimeout = 5 * time.Second
	c.RequestTimeout = 2 * time.Second
	c.DialTimeout = 2 * time.Second
	return c
}

func connect(t testing.TB, cfg Config) *Sink {
	t.Helper()
	s, err := New(cfg, testEnv())
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Connect(ctx); err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

// makeRecords returns n records with IDs p:from.., keys k0..k(keys-1), and
// fields n (per key counter), site and i.
func makeRecords(from, n, keys int) []agent.Record {
	out := make([]agent.Record, n)
	for j := range out {
		i := from + j
		out[j] = agent.Record{
			ID: "p:" + strconv.Itoa(i), Seq: uint64(i), Key: "k" + strconv.Itoa(i%keys), Source: "sim",
			EventTime: time.Unix(1700000000, 0).UnixNano() + int64(i),
			Fields:    []agent.Field{agent.Int("i", int64(i)), agent.String("site", "s"+strconv.Itoa(i%2))},
		}
	}
	return out
}

// consume reads topics from the start until want records arrived or the
// deadline passed.
func consume(t testing.TB, addr string, want int, timeout time.Duration, topics []string, opts ...kgo.Opt) []*kgo.Record {
	t.Helper()
	opts = append([]kgo.Opt{kgo.SeedBrokers(addr), kgo.ConsumeTopics(topics...), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100 * time.Millisecond)}, opts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatalf("consumer: %v", err)
	}
	defer cl.Close()
	var out []*kgo.Record
	deadline := time.Now().Add(timeout)
	for len(out) < want && time.Now().Before(deadline) {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
	// A short extra poll catches records beyond want (duplicates).
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { out = append(out, r) })
	cancel()
	return out
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// steadySource emits batches of per records every interval until total
// records were emitted, then io.EOF once all were acked (and hold, if set,
// is closed). Record i has key k(i%keys) and field i; with pad > 0 also a
// string field pad of that many bytes, and a raw payload {"i":i}: the
// record takes pad bytes in the log, but the raw encoding sends only
// {"i":i} to Kafka.
type steadySource struct {
	total, per, keys int
	interval         time.Duration
	pad              int
	hold             <-chan struct{}

	mu      sync.Mutex
	next    int
	unacked int
	nacks   int
}

func (s *steadySource) Connect(context.Context) error { return nil }

func (s *steadySource) Read(ctx context.Context) ([]agent.Record, agent.AckFunc, error) {
	t := time.NewTimer(s.interval)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	case <-t.C:
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.next >= s.total {
		if s.unacked == 0 && s.released() {
			return nil, nil, io.EOF
		}
		s.mu.Unlock()
		if !agent.Sleep(ctx, time.Millisecond) {
			s.mu.Lock()
			return nil, nil, ctx.Err()
		}
		s.mu.Lock()
	}
	n := min(s.per, s.total-s.next)
	recs := make([]agent.Record, n)
	pad := strings.Repeat("x", s.pad)
	for j := range recs {
		i := s.next + j
		recs[j] = agent.Record{Key: "k" + strconv.Itoa(i%s.keys), Source: "steady", Fields: []agent.Field{agent.Int("i", int64(i))}}
		if s.pad > 0 {
			recs[j].Raw = []byte(`{"i":` + strconv.Itoa(i) + `}`)
			recs[j].Fields = append(recs[j].Fields, agent.String("pad", pad))
		}
	}
	s.next += n
	s.unacked++
	return recs, func(_ context.Context, err error) {
		s.mu.Lock()
		s.unacked--
		if err != nil {
			s.nacks++
		}
		s.mu.Unlock()
	}, nil
}

func (s *steadySource) released() bool {
	if s.hold == nil {
		return true
	}
	select {
	case <-s.hold:
		return true
	default:
		return false
	}
}

// emitted returns how many records Read has returned so far.
func (s *steadySource) emitted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.next
}

func (s *steadySource) Close(context.Context) error { return nil }

// checkDelivery checks that every record 0..total-1 arrived (by the field i
// in the JSON value, and by pspf-id), and that per key the first
// occurrences are in order. It returns the number of duplicates.
func checkDelivery(t *testing.T, got []*kgo.Record, total int) int {
	t.Helper()
	seen := map[string]bool{}
	last := map[string]int{}
	dups := 0
	for _, r := range got {
		id := header(r, HeaderID)
		if seen[id] {
			dups++
			continue
		}
		seen[id] = true
		var i int
		if _, err := fmt.Sscanf(string(r.Value[bytesIndex(r.Value, `"i":`)+4:]), "%d", &i); err != nil {
			t.Fatalf("value %s: %v", r.Value, err)
		}
		k := string(r.Key)
		if p, ok := last[k]; ok && i < p {
			t.Errorf("key %s: got i=%d after %d, want increasing", k, i, p)
		}
		last[k] = i
	}
	if len(seen) != total {
		t.Errorf("got %d distinct records, want %d", len(seen), total)
	}
	return dups
}

func bytesIndex(b []byte, s string) int {
	for i := 0; i+len(s) <= len(b); i++ {
		if string(b[i:i+len(s)]) == s {
			return i
		}
	}
	return -1
}
