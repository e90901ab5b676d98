package agent_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent"
)

var errNack = errors.New("log full")

func batch(id int64) []agent.Record {
	return []agent.Record{{Fields: []agent.Field{agent.Int("id", id)}}}
}

func batchID(b []agent.Record) int64 { return b[0].Fields[0].Int }

// acquireNew takes a slot and expects no redelivery.
func acquireNew(t *testing.T, u *agent.Unacked) {
	t.Helper()
	b, _, err := u.Acquire(context.Background())
	if b != nil || err != nil {
		t.Fatalf("got %d records, %v; want a slot and nothing to redeliver", len(b), err)
	}
}

func blocks(u *agent.Unacked) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, _, err := u.Acquire(ctx)
	return errors.Is(err, context.DeadlineExceeded)
}

func TestUnackedBoundsBatches(t *testing.T) {
	u := agent.NewUnacked(2, nil)
	acquireNew(t, u)
	ack1 := u.Ack(batch(1))
	acquireNew(t, u)
	ack2 := u.Ack(batch(2))
	if !blocks(u) {
		t.Fatal("got a third slot with 2 batches unacked, want Acquire to block")
	}
	ack1(context.Background(), nil)
	ack1(context.Background(), nil) // a second call gives back nothing more
	acquireNew(t, u)
	if !blocks(u) {
		t.Fatal("got a slot back twice from one ack")
	}
	u.Release()
	acquireNew(t, u)
	u.Release()
	ack2(context.Background(), nil)
}

func TestUnackedRedeliversNackedInOrder(t *testing.T) {
	redelivered := new(agent.Counter)
	u := agent.NewUnacked(3, redelivered)
	ctx := context.Background()
	var acks []agent.AckFunc
	for id := range int64(3) {
		acquireNew(t, u)
		acks = append(acks, u.Ack(append(batch(id), agent.Record{})))
	}
	acks[2](ctx, errNack)
	acks[0](ctx, errNack)
	acks[0](ctx, errNack) // once only: not queued twice
	acks[1](ctx, nil)
	for _, want := range []int64{2, 0} {
		b, ack, err := u.Acquire(ctx)
		if err != nil || b == nil || batchID(b) != want {
			t.Fatalf("got %v, %v; want batch %d again", b, err, want)
		}
		ack(ctx, nil)
	}
	acquireNew(t, u)
	u.Release()
	if got := redelivered.Get(); got != 4 {
		t.Errorf("got %d records counted as redelivered, want 4", got)
	}
}

func TestUnackedDrain(t *testing.T) {
	ctx := context.Background()
	u := agent.NewUnacked(2, nil)
	if b, ack, err := u.Drain(ctx); b != nil || ack != nil || err != nil {
		t.Fatalf("got %v, %v on an idle Unacked; want nil, nil", b, err)
	}
	acquireNew(t, u)
	ack := u.Ack(batch(7))
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, _, err := u.Drain(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v with a batch unacked, want Drain to wait until the deadline", err)
	}
	go ack(ctx, errNack)
	b, ack, err := u.Drain(ctx)
	if err != nil || b == nil || batchID(b) != 7 {
		t.Fatalf("got %v, %v; want batch 7 again", b, err)
	}
	go ack(ctx, nil)
	if b, _, err := u.Drain(ctx); b != nil || err != nil {
		t.Fatalf("got %v, %v; want nil, nil once batch 7 is acked", b, err)
	}
}

// TestUnackedConcurrentAcks hands out batches, acks them from other
// goroutines with random nacks, and drains: every batch ends acked exactly
// once, and no more than the bound are ever out at once.
func TestUnackedConcurrentAcks(t *testing.T) {
	const n, bound = 500, 4
	ctx := context.Background()
	u := agent.NewUnacked(bound, nil)
	var mu sync.Mutex
	acked := map[int64]int{}
	out := 0
	var wg sync.WaitGroup
	hand := func(b []agent.Record, ack agent.AckFunc) {
		mu.Lock()
		if out++; out > bound {
			t.Errorf("got %d batches out at once, want at most %d", out, bound)
		}
		mu.Unlock()
		wg.Go(func() {
			time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
			mu.Lock()
			out--
			nack := rand.IntN(3) == 0
			if !nack {
				acked[batchID(b)]++
			}
			mu.Unlock()
			if nack {
				ack(ctx, errNack)
			} else {
				ack(ctx, nil)
			}
		})
	}
	for id := int64(0); id < n; {
		b, ack, err := u.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if b == nil {
			b = batch(id)
			ack = u.Ack(b)
			id++
		}
		hand(b, ack)
	}
	for {
		b, ack, err := u.Drain(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if b == nil {
			break
		}
		hand(b, ack)
	}
	wg.Wait()
	if len(acked) != n {
		t.Errorf("got %d batches acked, want %d", len(acked), n)
	}
	for id, c := range acked {
		if c != 1 {
			t.Errorf("batch %d acked %d times, want once", id, c)
		}
	}
}
