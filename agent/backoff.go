package agent

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff computes exponential delays with full jitter: attempt n waits a
// uniformly random time in [0, min(Max, Initial·2ⁿ)]. Full jitter spreads a
// fleet of gateways that lost the same uplink, so they do not all reconnect in
// the same instant when it returns.
type Backoff struct {
	Initial time.Duration
	Max     time.Duration
	attempt int
}

// Next returns the delay before the next attempt and counts the attempt.
func (b *Backoff) Next() time.Duration {
	ceil := b.Initial
	for i := 0; i < b.attempt && ceil < b.Max; i++ {
		ceil *= 2
	}
	if ceil > b.Max {
		ceil = b.Max
	}
	b.attempt++
	if ceil <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(ceil) + 1))
}

// Reset starts the sequence over after a success.
func (b *Backoff) Reset() { b.attempt = 0 }

// Attempts returns how many delays were handed out since the last Reset.
func (b *Backoff) Attempts() int { return b.attempt }

// Sleep waits d or until ctx is done, and reports whether the full d passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
