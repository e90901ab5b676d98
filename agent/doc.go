// Package agent is the SDK every pspf-edge connector is written against:
// the record model, the contracts of sources, operators and sinks, what a
// component gets from the runner (Env), how it is registered (Factory),
// the errors it returns, and how its config is decoded and validated.
// Connectors (the packages under sources/, operators/ and sinks/) import
// this package and nothing else of the module but the libraries of their
// folder (operators/expr); the runtime that runs them is agent/runner, and
// TestPackageMap keeps it that way. A map of the
// packages and the path of a record through them is in
// docs/architecture.md.
//
// # Records
//
// A Record is an ID, a key, an event and a receive time, a flat list of
// typed Fields (float, int, bool, string, bytes) and the Raw payload as
// received. Records are encoded with msgp (MarshalMsg, UnmarshalMsg) in the
// pipeline log and in state. Fields are looked up by name (Record.Field,
// Set, Delete); the hot paths reuse a record's slices rather than
// allocating per field (Record.Reset, Batch.Reset).
//
// # Sources
//
// The runner calls Source.Connect until it succeeds (with backoff between
// attempts), then Read in a loop from one goroutine, then Close once,
// after the last ack. A connect error marked Permanent is a setup error
// (credentials or a certificate refused, TLS files gone): if it comes
// before every source and sink of the pipeline has connected once, a
// reload that started the pipeline goes back to the previous config; any
// other error is an outage, waited out. Read blocks until a
// batch is ready or ctx is done, and returns the batch with its AckFunc.
// The records belong to the runner from then until the ack: the source
// must not touch them, unless it implements Appender, whose Appended call
// says the runner is done with them (the log holds copies) before the ack.
//
// The ack is called exactly once per batch, possibly from another goroutine
// and after later batches were read: with nil once every record of the
// batch is durable in the pipeline log (fsynced) or was deliberately
// dropped by an operator, with an error to ask for redelivery (for MQTT:
// no PUBACK). A source bounds the batches that may be unacked at once and
// blocks in Read at the bound: that is how backpressure reaches the origin
// (Unacked does this bookkeeping for sources that cannot replay). A finite
// source returns io.EOF after its last batch.
//
// # Operators
//
// Operator.Process works on a Batch in place: it may change, remove,
// reorder or add records, and move a record it cannot handle to the
// dead-letter list with Batch.Reject. Batch.Keep is the loop most
// operators need: it keeps, drops or rejects each record in place, in
// order, without allocating (Batch.KeepOrFail, when an error fails the
// whole batch). The runner calls one instance from
// one goroutine at a time; an operator before the log runs once per
// source, each source with its own instance. An error fails the whole
// batch and a panic is recovered and counted the same way. An operator
// registered with Factory.Stateful runs after the pipeline log (and may
// implement Snapshotter and TimerHandler): its state is a StateTable
// (Env.State), checkpointed
// atomically with the log cursor, so after a crash it is exactly as at the
// last checkpoint and the records after it are replayed. Time inside an
// operator is Batch.Now: the wall clock with its monotonic reading, or the
// virtual clock of `pspf-edge test`.
//
// # Sinks
//
// The runner calls Sink.Connect until it succeeds (with backoff between
// attempts, and setup errors as for sources), then Write from one
// goroutine, then Flush (if it is a Flusher) and Close
// once. Write blocks until the destination has accepted every record
// durably (Kafka acks, an HTTP 2xx, an MQTT PUBACK) and only then returns
// nil: the runner then advances the sink's cursor and never hands those
// records over again. Any other error makes the runner retry the batch,
// with backoff, unless it is Permanent or a RejectedError: those records
// go to the dead-letter log. Write must not keep the records or their
// Fields and Raw after it returns: the runner reuses them for the next
// batch. A string of a record stays valid, but keeping one keeps the whole
// batch's strings in memory (they share one allocation, see StringArena):
// copy what must outlive the call. A sink that commits its own cursor with
// the records implements CursorOwner.
//
// # Env, registration and metrics
//
// A connector package exports a function that returns its Factory, most
// simply with Typed over its config struct; cmd/pspf-edge registers it in
// the runner's registry under a type name. Factory.New builds the
// component from the decoded, validated config and an Env: its pipeline
// and place, a logger already carrying both, its data directory, the clock
// (Env.Now), its counters and gauges (Env.Counter, Env.Gauge: look them up
// once, at construction) and, for stateful operators, its state table.
// The runner fills every field; a constructor begins with
// env = env.WithDefaults(), which fills a missing Logger and Now, so that
// a test or a command may build the component with a partial Env.
// Constructors start no goroutines: Connect may, and Close stops them.
//
// # Configuration
//
// A component's config is a struct decoded strictly from its pipeline
// file by Node.Decode: `yaml` tags name the keys, `enum` tags list the
// allowed values, `doc` tags document them for `pspf-edge schema`;
// durations and ByteSize are written as in 500ms and 64MiB. Rule tags
// state the usual limits, with the message the decoder gives:
// `required:"true"` (must not be empty), `min:"1" max:"65536"` (must be
// between 1 and 65536), `min:">0"` (must be positive), `min:"0"` (must not
// be negative), `max:"1s"`, `min:"64KiB" max:"1GiB"`; bounds of durations
// and sizes are written as their values are. Unknown keys, wrong types and
// values outside an enum or a rule are errors, and decoding goes on so that
// every problem is reported. A config with rules beyond its fields (one
// key against another, a limit that depends on a mode) implements
// Validator, which runs after the field rules, and reports each problem at
// its key with Node.Errorf, so that the message names the file, the line
// and the path.
// TLSConfig is the `tls:` block of every connector: one rule for when
// TLS is on (TLSConfig.On), its files checked at validation, Build for the
// *tls.Config.
//
// # Secrets
//
// A config field tagged `secret:"true"` (a password, a token, a map of
// secret header values) is a secret: the runner adds its value to the
// agent's Secrets before the component is built, and masks it, and the
// password of every URL, wherever an error or a value becomes text: log
// lines (RedactHandler), last errors in the status, dead-letter reasons.
// A component returns its errors as they are; it writes a configured URL
// in its own messages through RedactURL, and adds a secret it learns at
// run time with Env.Secrets.Add.
package agent
