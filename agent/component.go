package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"
)

// AckFunc reports the fate of a batch read from a Source. The runner calls it
// exactly once per batch: with nil once every record of the batch is durable in
// the pipeline log (or was deliberately dropped by an operator), or with an error
// to ask the source to redeliver (for MQTT: no PUBACK is sent). It may be called
// from another goroutine than Read's, and after later batches were read.
type AckFunc func(ctx context.Context, err error)

// Source produces records. The runner calls Connect once, then Read in a loop
// from one goroutine, then Close once after the last ack has been called.
//
// Read blocks until a batch is available or ctx is done; it returns ctx's error
// in the latter case. The returned records belong to the runner until the batch
// is acked: a source must not touch them until then. A source bounds how many
// batches may be unacked at once; when it reaches the bound, Read blocks, which
// is how backpressure reaches the origin. A source whose input is finite returns
// io.EOF after its last batch.
type Source interface {
	Connect(ctx context.Context) error
	Read(ctx context.Context) ([]Record, AckFunc, error)
	Close(ctx context.Context) error
}

// Appender is implemented by sources that can let go of part of a batch
// before it is durable. Once the batch most recently returned by Read is
// appended to the pipeline log, and before that batch is acked, the runner
// calls Appended from Read's goroutine: the runner no longer touches the
// batch's records (the log holds copies), so the source may reuse their
// memory and stop counting against its in-flight bound the messages that its
// origin would never send again anyway (MQTT QoS 0). The ack still follows,
// once the batch is durable. A batch that is not appended (everything
// filtered, or the append failed) gets no Appended call, only its ack.
type Appender interface {
	Appended()
}

// Operator transforms batches. Process works on b in place: it may change,
// remove, reorder or add records, and move a record it cannot handle to b.Dead
// with a reason. The runner calls an instance's Process from one goroutine
// at a time: an operator before the log (stateless) is built once per
// source, from the same config, and each source runs its own instances. A
// returned error fails the whole batch (it is counted, and its records go to the
// dead-letter output); a panic is recovered and treated the same way.
type Operator interface {
	Process(ctx context.Context, b *Batch) error
}

// Sink delivers records to a destination. The runner calls Connect (retried with
// backoff while it fails), then Write from one goroutine, then Close once.
//
// Write returns nil only once the destination has accepted every record
// durably (Kafka acks, an HTTP 2xx, an MQTT PUBACK); the records are then
// acknowledged in the log and never written again. Any other result makes the
// runner retry the batch, unless the error is permanent (see Permanent and
// RejectedError): permanently failed records go to the dead-letter log. Write
// must not keep records after it returns.
type Sink interface {
	Connect(ctx context.Context) error
	Write(ctx context.Context, records []Record) error
	Close(ctx context.Context) error
}

// CursorOwner is implemented by sinks that keep their own cursor at the
// destination, committed atomically with the records (the Kafka sink with
// exactly_once commits it in the same transaction). After every successful
// Connect the runner calls Cursor and, when ok, treats every log record with
// a sequence <= seq as delivered: the sink's reader is moved past them.
// Records handed to Write carry their log sequence in Record.Seq, which the
// sink commits as its cursor. A CursorOwner is always drained oldest_first,
// since its cursor can only say "everything up to here". A sink type that
// keeps such a cursor only in some configs (the Kafka sink, with
// exactly_once) also has a method OwnsCursor() bool: an instance for which
// it returns false is an ordinary sink.
type CursorOwner interface {
	Cursor(ctx context.Context) (seq uint64, ok bool, err error)
}

// Flusher is implemented by sinks that buffer internally (files, consoles); the
// runner calls Flush before Close on a clean shutdown.
type Flusher interface {
	Flush(ctx context.Context) error
}

// Batch is the unit the runner moves through the operator chain.
type Batch struct {
	// Records are the records still in the batch.
	Records []Record
	// Dead are records an operator rejected, with the reason, on their way to
	// the dead-letter output.
	Dead []Dead
	// Now is the batch's processing time: the wall clock for a live pipeline,
	// the virtual clock in `pspf-edge test`.
	Now time.Time
}

// Reject moves r to the dead-letter list with the rejecting component's name
// and the error that explains why.
func (b *Batch) Reject(r Record, component string, err error) {
	b.Dead = append(b.Dead, Dead{Record: r, Component: component, Err: err})
}

// Keep calls keep on each record of b in order and keeps the records for
// which it returns true, in their order; the others leave the batch. A
// record for which keep returns an error is rejected: it moves to Dead
// with component and the error (as Reject does) and its slot is cleared,
// since the dead copy owns the record's slices now. Keep returns how many
// records it dropped (false, nil: the operator counts them under
// pspf_dropped_total with its reason) and how many it rejected.
//
// keep may change the record it is given and must not keep the pointer.
// Records change places by swapping, never by copying, so that no two
// slots share a Fields array: the runner reuses a batch's slots and their
// slices. Keep itself allocates nothing; only Dead may grow. KeepOrFail is
// the same loop for errors that fail the whole batch.
func (b *Batch) Keep(component string, keep func(r *Record) (bool, error)) (dropped, rejected int) {
	dropped, rejected, _ = b.sift(component, false, keep)
	return dropped, rejected
}

// KeepOrFail is Keep for operators whose errors concern the batch, not a
// record (a state table that cannot be read): the first error stops it,
// and it returns that error, which the operator returns from Process to
// fail the whole batch. The batch then holds the records kept so far and
// those not looked at yet, the one that failed among them. It returns how
// many records it dropped.
func (b *Batch) KeepOrFail(keep func(r *Record) (bool, error)) (dropped int, err error) {
	dropped, _, err = b.sift("", true, keep)
	return dropped, err
}

// sift is the loop of Keep and KeepOrFail: an error rejects the record, or
// with stop, ends the loop.
func (b *Batch) sift(component string, stop bool, keep func(r *Record) (bool, error)) (dropped, rejected int, err error) {
	w := 0
	for i := range b.Records {
		ok, kerr := keep(&b.Records[i])
		switch {
		case kerr != nil && stop:
			// The records not looked at yet join the kept ones; the
			// dropped ones stay behind, past the length.
			for j := i; j < len(b.Records); j++ {
				b.Records[w], b.Records[j] = b.Records[j], b.Records[w]
				w++
			}
			b.Records = b.Records[:w]
			return dropped, rejected, kerr
		case kerr != nil:
			b.Reject(b.Records[i], component, kerr)
			b.Records[i] = Record{}
			rejected++
		case !ok:
			dropped++
		default:
			if w != i {
				b.Records[w], b.Records[i] = b.Records[i], b.Records[w]
			}
			w++
		}
	}
	b.Records = b.Records[:w]
	return dropped, rejected, nil
}

// Reset empties the batch for reuse, keeping its slices' capacity.
func (b *Batch) Reset() {
	b.Records = b.Records[:0]
	b.Dead = b.Dead[:0]
}

// Dead is a record that could not be processed or delivered.
type Dead struct {
	Record    Record
	Component string
	Err       error
}

// Env is what a component's constructor gets from the runner: its name and
// place, a logger and its counters. It holds no goroutines.
type Env struct {
	// Pipeline is the pipeline's name (its file name without extension).
	Pipeline string
	// Component is the component's place in the pipeline, like
	// "operators[2].filter" or "sinks[0].kafka".
	Component string
	// Logger is the component's logger, already carrying pipeline and component.
	Logger *slog.Logger
	// Metrics counts what the component does; nil outside a pipeline (a
	// unit test), where Counter and Gauge count nowhere.
	Metrics Metrics
	// DataDir is a directory the component may keep files in; it survives
	// restarts. The runner does not create it: MkDataDir does, and the
	// component creates its files with DataFilePerm.
	DataDir string
	// AgentName identifies this agent in headers and client ids.
	AgentName string
	// Now returns the current time; the deterministic runner replaces it.
	Now func() time.Time
	// State opens the component's state table; set by the runner for
	// stateful operators only (see Stateful and StateTableOf).
	State StateFunc
	// ReportError, when set, records an error the component met on a
	// goroutine of its own (a connection lost and made again in the
	// background) as the pipeline's last error, for the status API. It is
	// safe for concurrent use; the runner sets it. ReportError(nil) says
	// the component has recovered: the error it reported is cleared (if
	// nothing else was reported since).
	ReportError func(error)
	// Secrets is the agent's set of secret values (see Secrets). The
	// values of the component's config fields tagged `secret:"true"` are
	// in it before the component is built; a component that learns a
	// secret at run time (a token it fetched, a password taken apart from
	// a connection string) adds it, so that no error or log line shows
	// it. Nil outside a pipeline, where Add does nothing (WithDefaults
	// gives the component a set of its own).
	Secrets *Secrets
	// Unreachable lets a sink say, while a Write still waits, that its
	// destination has stopped answering, and why (err): the runner shows
	// the sink offline from then on, with err as its last error, until a
	// Write succeeds. The Write itself goes on (a produce that keeps
	// retrying, a slow answer). A sink calls it only while a Write is in
	// progress, from any goroutine, and returns from Write after its last
	// call. Set by the runner for sinks only; nil elsewhere.
	Unreachable func(err error)
}

// DataDirPerm and DataFilePerm are the modes of what a component keeps in
// its DataDir, as of everything the agent writes in its data directory:
// the owner's to write, the group's to read, nobody else's (the data are
// the sites' payloads and state). Give them explicitly, so that no umask
// widens them (docs/security.md).
const (
	DataDirPerm  os.FileMode = 0o750
	DataFilePerm os.FileMode = 0o640
)

// MkDataDir creates the component's DataDir, and its parents, with
// DataDirPerm, and returns it.
func (e Env) MkDataDir() (string, error) {
	if e.DataDir == "" {
		return "", errors.New("no data directory outside a pipeline")
	}
	if err := os.MkdirAll(e.DataDir, DataDirPerm); err != nil {
		return "", fmt.Errorf("data directory: %w", err)
	}
	return e.DataDir, nil
}

// WithDefaults returns e with what a partial Env lacks filled in: a Logger
// that discards (for a nil Logger), the wall clock (for a nil Now) and a
// set of secrets of the component's own (for nil Secrets), so that what it
// adds is still masked in its own errors. Metrics may stay nil, since
// Counter and Gauge count nowhere then, and so may State, ReportError and
// Unreachable, whose absence means something.
// The runner fills every field itself; a connector's constructor starts
// with env = env.WithDefaults(), so that it also works when a test or a
// command builds it with a partial Env, and so that the defaults are
// decided here, once.
func (e Env) WithDefaults() Env {
	if e.Logger == nil {
		e.Logger = slog.New(slog.DiscardHandler)
	}
	if e.Now == nil {
		e.Now = time.Now
	}
	if e.Secrets == nil {
		e.Secrets = new(Secrets)
	}
	return e
}

// Counter returns the component's counter with the given name and labels
// (pairs of label name and value), created on first use: the labels
// pipeline and component come first. Without Metrics it returns a new
// counter that no one reads.
func (e Env) Counter(name string, labels ...string) *Counter {
	if e.Metrics == nil {
		return new(Counter)
	}
	return e.Metrics.Counter(name, e.labels(labels)...)
}

// Gauge registers f as the component's gauge with the given name and labels,
// after the labels pipeline and component (see Metrics.Gauge). Without
// Metrics it does nothing.
func (e Env) Gauge(name string, f func() float64, labels ...string) {
	if e.Metrics != nil {
		e.Metrics.Gauge(name, f, e.labels(labels)...)
	}
}

func (e Env) labels(extra []string) []string {
	return append([]string{"pipeline", e.Pipeline, "component", e.Component}, extra...)
}
