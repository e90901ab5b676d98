package mqtt

import (
	"context"
	"fmt"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/internal/mqttc"
)

// keptClient is a connected client with its keepSubscribed loop, which
// Disconnect ends first: there is never more than one loop, and none
// outlives its client.
type keptClient struct {
	broker
	stop context.CancelFunc
	done chan struct{} // closed when keepSubscribed has returned
}

// Disconnect ends the keepSubscribed loop, then the client.
func (c *keptClient) Disconnect(quiesce time.Duration) {
	c.stop()
	<-c.done
	c.broker.Disconnect(quiesce)
}

// setupRetry is the first wait before a failed setup of a connection is
// tried again; it doubles up to max_reconnect_interval.
const setupRetry = time.Second

// keepSubscribed sets up every connection of b after the first (and the
// first too when the broker resumed the session), as kick asks: it
// subscribes and publishes the birth message. A SUBSCRIBE the broker
// refuses (an ACL that does not grant the topic yet: SUBACK 0x80, or an
// MQTT 5 reason code from 0x80) or leaves unanswered for subTimeout, or a
// birth message that fails, is tried again on the same connection after
// a jittered backoff (agent.Backoff: a ceiling of 1 s doubling up to
// max_reconnect_interval), so that a fixed ACL takes effect without
// waiting for the connection to drop. A connection
// that ends stops the retries until the next one, which is set up at
// once. An episode of failures lasts until a connection is set up: one
// WARN at its start, each failure counted and reported for the status,
// and at its end one INFO and a recovery report. keepSubscribed returns
// when ctx ends (its client is disconnected or the source closes).
func (s *Source) keepSubscribed(ctx context.Context, b broker, kick <-chan struct{}) {
	bo := agent.Backoff{Initial: setupRetry, Max: max(s.cfg.MaxReconnect, setupRetry)}
	granted := false
	mqttc.KeepSetUp(ctx, kick, bo, func(fresh bool) error {
		if fresh {
			granted = false
		}
		if !granted {
			if err := s.subscribe(ctx, b); err != nil {
				return err
			}
			granted = true
		}
		return s.birth(ctx, b)
	}, s.setUp, func(err error, wait time.Duration) {
		if granted {
			s.birthFailures.Inc()
		} else {
			s.subFailures.Inc()
		}
		if s.env.ReportError != nil {
			s.env.ReportError(err)
		}
		if s.setupFailing.CompareAndSwap(false, true) {
			s.log.Warn("mqtt source: setting up the connection failed; retrying on it with backoff, nothing is received meanwhile",
				"err", err, "retry_in", wait.Round(time.Millisecond), "max_retry_interval", bo.Max)
		} else {
			s.log.Debug("mqtt source: setting up the connection failed again", "err", err, "retry_in", wait.Round(time.Millisecond))
		}
	})
}

// setUp ends an episode of failed setups, if one is under way.
func (s *Source) setUp() {
	if !s.setupFailing.CompareAndSwap(true, false) {
		return
	}
	s.log.Info("mqtt source: subscribed again", "subscriptions", len(s.filters))
	if s.env.ReportError != nil {
		s.env.ReportError(nil)
	}
}

// setup subscribes and publishes the birth message.
func (s *Source) setup(ctx context.Context, b broker) error {
	if err := s.subscribe(ctx, b); err != nil {
		return err
	}
	return s.birth(ctx, b)
}

// subscribe subscribes to the filters.
func (s *Source) subscribe(ctx context.Context, b broker) error {
	if err := s.await(ctx, "SUBACK", func(ctx context.Context) error { return b.Subscribe(ctx, s.filters) }); err != nil {
		return fmt.Errorf("mqtt source: subscribe: %w", err)
	}
	return nil
}

// birth publishes the birth message, if a status topic is set.
func (s *Source) birth(ctx context.Context, b broker) error {
	st := s.cfg.Status
	if st.Topic == "" {
		return nil
	}
	if err := s.await(ctx, "PUBACK", func(ctx context.Context) error {
		return b.Publish(ctx, st.Topic, byte(st.QoS), st.Retain, []byte(st.Online))
	}); err != nil {
		return fmt.Errorf("mqtt source: publish birth message: %w", err)
	}
	return nil
}

// await runs req, which waits for the broker's answer (what: SUBACK or
// PUBACK), and fails it, naming what, when subTimeout passes without it.
// Time in which a message waits for room in flight does not count: the
// client does not read the socket meanwhile, and the answer may be queued
// behind that message (a resumed session's backlog, a pipeline that
// stalls); it is waited for, not asked for again.
func (s *Source) await(ctx context.Context, what string, req func(context.Context) error) error {
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	timeout := fmt.Errorf("no %s within %v", what, s.subTimeout)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTimer(s.subTimeout)
		defer t.Stop()
		seen, _ := s.queue.stalled()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			n, blocked := s.queue.stalled()
			if !blocked && n == seen {
				cancel(timeout)
				return
			}
			seen = n
			t.Reset(s.subTimeout)
		}
	}()
	err := req(rctx)
	close(stop)
	<-done
	if err != nil && ctx.Err() == nil && context.Cause(rctx) == timeout {
		return timeout
	}
	return err
}
