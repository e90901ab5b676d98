// Package runner is the runtime of pspf-edge: it runs pipelines of the
// components the SDK (package agent) defines. Connectors never import it;
// cmd/pspf-edge, agent/supervisor and the tests do.
//
// A pipeline file is parsed and validated by Registry.ParsePipeline (the
// registry holds the factories cmd/pspf-edge registers) into a
// PipelineSpec; the agent's own file by LoadAgentConfig. NewPipeline builds
// the components and opens the logs; Pipeline.Run runs it:
//
//   - ingest (ingest.go): each source's Read loop runs its own chain of the
//     stateless operators and appends what is left to the pipeline log; one
//     fsync covers every batch waiting at that moment (group commit), and
//     only then is each batch acked to its source. Dead letters go to the
//     dead-letter log under the same commit.
//   - the stateful stage (stateful_*.go), when the pipeline has stateful
//     operators: it reads the pipeline log, runs them with their state in
//     the state file, and appends their output to an outbox; a checkpoint
//     commits the state, the log cursor and the outbox's end together.
//   - forward (forward.go, livefirst.go): each sink reads the log (or the
//     outbox) from its own persistent cursor, in batches bounded in records
//     and bytes, writes them, retries with backoff while the destination
//     is down, and advances its cursor past what the destination accepted.
//
// Status reports what a pipeline is doing, for the admin API; Metrics is
// the agent's registry of counters and gauges, written in the Prometheus
// text format. Redrive sends the dead-letter log to a sink again; RunLocal
// runs a pipeline on a fixed input with a virtual clock (`pspf-edge test`).
package runner
