package mqttc

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// ReconnectDelay is the first step of the reconnect backoff: the wait
// before the first attempt after a connection that had been stable.
const ReconnectDelay = 250 * time.Millisecond

// stableMin is the least a connection must live, whatever the keepalive,
// for the reconnect backoff to start over when it ends. A broker that
// accepts every connection and then breaks it (a malformed packet, another
// client taking the session over) thus meets a growing backoff, not a
// retry every 250 ms.
const stableMin = 10 * time.Second

// summaryEvery is how often, at most, a reconnect episode logs a summary
// WARN while it lasts.
const summaryEvery = time.Minute

// Why a connection ended: the label values of
// pspf_mqtt_connections_lost_total{cause}.
const (
	// causeTakeover: the broker closed the connection without an error and
	// accepted the very next connect: another client with the same
	// client_id has most likely taken the session over (see takeover).
	causeTakeover = "takeover"
	// causeClosed: the broker closed the connection without an error and
	// the next connect failed: it is going away (a restart).
	causeClosed = "closed_by_broker"
	// causeProtocol: the broker sent a packet that breaks MQTT 3.1.1.
	causeProtocol = "protocol_violation"
	// causeKeepalive: nothing came back for a keepalive after a PINGREQ.
	causeKeepalive = "keepalive"
	// causeNetwork: any other read or write error.
	causeNetwork = "network"
)

var (
	// errBrokerClosed is a connection that the broker closed between two
	// packets, without an error packet (MQTT 3.1.1 has none to send).
	errBrokerClosed = errors.New("mqtt: connection closed by the broker")
	// errKeepalive is a connection that answered nothing to a PINGREQ.
	errKeepalive = errors.New("mqtt: keepalive timeout")
)

// lossCause returns why a connection ended, from the error that ended it;
// causeClosed stands for a silent close until the next connect tells a
// takeover from a broker going away (see silentClose); under MQTT 5 a
// broker's DISCONNECT says which.
func lossCause(err error) string {
	var pe *protocolError
	var re *ReasonError
	switch {
	case errors.Is(err, errBrokerClosed):
		return causeClosed
	case errors.As(err, &re) && re.Packet == "DISCONNECT":
		// MQTT 5 names it: no guessing from the next connect.
		switch re.Code {
		case 0x8E:
			return causeTakeover
		case 0x8D:
			return causeKeepalive
		case 0x81, 0x82, 0x93, 0x94, 0x95, 0x99:
			return causeProtocol // the broker says the client broke the protocol
		}
		return causeClosed
	case errors.As(err, &pe):
		return causeProtocol
	case errors.Is(err, errKeepalive):
		return causeKeepalive
	}
	return causeNetwork
}

// silentClose reports whether err is a close without a word from the
// broker (MQTT 3.1.1 has none to send).
func silentClose(err error) bool { return errors.Is(err, errBrokerClosed) }

// takeover is the error of a connection taken to have been taken over.
//
// MQTT 3.1.1 gives no reason when a broker drops a client: mosquitto, on a
// CONNECT with a client_id already connected, closes the older connection
// without a packet. The client therefore counts a takeover when the broker
// closed the connection between packets, without an error packet and not
// for a keepalive, and then accepted the first connect that followed (after
// 125–250 ms or more): a broker going away refuses that connect. A broker
// restarted within that wait, or an administrator's kick, is counted too.
func takeover(clientID string) error {
	return fmt.Errorf("mqtt: session taken over, probably by another client with client_id %q (the broker closed the connection without an error, then accepted the next connect at once)", clientID)
}

// backoff is the wait before each reconnect attempt: exponential from
// ReconnectDelay up to max_reconnect_interval, with equal jitter (uniform
// in the upper half of each step, so that a fleet that lost the same broker
// spreads out, yet no attempt comes sooner than half its step). It starts
// over only after a stable connection (see stableMin), not after every
// successful connect.
type backoff struct {
	max     time.Duration
	attempt int
}

// next returns the wait before the next attempt and counts the attempt.
func (b *backoff) next() time.Duration {
	step := ReconnectDelay
	for i := 0; i < b.attempt && step < b.max; i++ {
		step *= 2
	}
	step = min(step, b.max)
	b.attempt++
	return step/2 + rand.N(step/2+1)
}

// reset starts the sequence over.
func (b *backoff) reset() { b.attempt = 0 }

// episode keeps the log of a run of lost connections quiet: from the first
// loss after a stable connection until the next stable connection it logs
// one WARN per cause, naming it, and at most one summary WARN a minute
// with the counts; each loss and failed attempt on its own is DEBUG. The
// metrics count every one.
type episode struct {
	log      *slog.Logger
	clientID string
	name     string // the log lines' prefix: "mqtt source"

	active     bool
	start      time.Time // the episode's first loss
	summaryAt  time.Time // the last summary, or start
	lost       int       // connections lost in the episode
	reconnects int       // reconnects in the episode
	named      map[string]bool
	recent     map[string]int // losses since summaryAt, by cause
	failed     int            // failed attempts since summaryAt
	lastErr    error
}

// onLost records a lost connection.
func (e *episode) onLost(now time.Time, cause string, err error, lived time.Duration) {
	if !e.active {
		e.active, e.start, e.summaryAt = true, now, now
		e.lost, e.reconnects, e.failed = 0, 0, 0
		e.named, e.recent = map[string]bool{}, map[string]int{}
	}
	e.lost++
	e.recent[cause]++
	e.lastErr = err
	attrs := []any{"cause", cause, "err", err, "session_lived", lived.Round(time.Millisecond), "client_id", e.clientID}
	if !e.named[cause] {
		e.named[cause] = true
		msg := e.name + ": connection lost; reconnecting with backoff"
		if cause == causeTakeover {
			msg = e.name + ": session taken over by another client with the same client_id; reconnecting with backoff"
		}
		e.log.Warn(msg, attrs...)
		return
	}
	e.log.Debug(e.name+": connection lost again", attrs...)
	e.summarize(now)
}

// onFailed records a failed reconnect attempt.
func (e *episode) onFailed(now time.Time, err error) {
	e.failed++
	e.lastErr = err
	e.log.Debug(e.name+": reconnect failed", "err", err, "client_id", e.clientID)
	if e.active {
		e.summarize(now)
	}
}

// onReconnected records a new connection; the first of an episode is
// logged at INFO.
func (e *episode) onReconnected(now time.Time) {
	e.reconnects++
	if e.active && e.reconnects == 1 {
		e.log.Info(e.name+": reconnected", "client_id", e.clientID, "after", now.Sub(e.start).Round(time.Millisecond))
		return
	}
	e.log.Debug(e.name+": reconnected", "client_id", e.clientID)
}

// onStable ends the episode once a connection has lived long enough,
// saying how long it lasted if it was more than one loss.
func (e *episode) onStable(now time.Time) {
	if !e.active {
		return
	}
	e.active = false
	if e.lost > 1 {
		e.log.Info(e.name+": connection stable again", "client_id", e.clientID,
			"connections_lost", e.lost, "episode", now.Sub(e.start).Round(time.Second))
	}
}

// summarize logs the summary WARN if the last one is summaryEvery old.
func (e *episode) summarize(now time.Time) {
	since := now.Sub(e.summaryAt)
	if since < summaryEvery {
		return
	}
	n := 0
	causes := make([]string, 0, len(e.recent))
	for c, k := range e.recent {
		n += k
		causes = append(causes, fmt.Sprintf("%s=%d", c, k))
	}
	slices.Sort(causes)
	e.log.Warn(e.name+": connection still unstable", "client_id", e.clientID,
		"connections_lost", n, "failed_attempts", e.failed, "in", since.Round(time.Second),
		"causes", strings.Join(causes, " "), "last_err", e.lastErr)
	e.summaryAt = now
	clear(e.recent)
	e.failed = 0
}
