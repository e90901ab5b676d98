package kafka

import (
	"fmt"

	"github.com/pspf/pspf-edge/agent"
)

// Exactly-once across a group of agents (agent.TxnSink). When the
// pipeline's source is a Kafka source in a group with the kafka state
// store, the runner produces this sink's records itself, in the
// transactions of the source's checkpoints (docs/distributed.md): the
// sink encodes them (EncodeTxn: its topic template, encoding, key and
// headers stay here) and is otherwise idle.

var _ agent.TxnSink = (*Sink)(nil)

// TxnTarget returns the brokers, the transactional id and the
// partitioner, with ok true when delivery is exactly_once.
func (s *Sink) TxnTarget() (agent.TxnTarget, bool) {
	return agent.TxnTarget{
		Brokers:         s.cfg.Brokers,
		TransactionalID: s.txnID(),
		RoundRobin:      s.cfg.Partitioner == "round_robin",
	}, s.cfg.Delivery == "exactly_once"
}

// txnID is the transactional id: transactional_id, else
// pspf-<agent>-<pipeline>-<sink>.
func (s *Sink) txnID() string {
	if s.cfg.TransactionalID != "" {
		return s.cfg.TransactionalID
	}
	return "pspf-" + s.env.AgentName + "-" + s.env.Pipeline + "-" + s.env.Component
}

// CarryInTransactions makes the sink keep no transactions nor cursor of
// its own: the runner's transactions carry its records, under the same
// transactional id (two producers with one id would fence each other).
func (s *Sink) CarryInTransactions() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.eos = nil
	s.cfg.Delivery = "at_least_once"
	if opts, err := s.clientOpts(); err == nil { // New built them from the same config
		s.opts = opts
	}
}

// EncodeTxn returns the Kafka record rec becomes, as Write would produce
// it, in memory of its own.
func (s *Sink) EncodeTxn(rec *agent.Record) (agent.TxnRecord, error) {
	out := agent.TxnRecord{Topic: s.static}
	if out.Topic == "" {
		b, err := s.topic.Append(nil, rec)
		if err != nil {
			return agent.TxnRecord{}, fmt.Errorf("kafka sink: topic: %w", err)
		}
		out.Topic = string(b)
	}
	if len(rec.Key) > 0 {
		out.Key = append([]byte(nil), rec.Key...)
	}
	out.Value = s.appendValue(nil, rec)
	out.Headers = append(out.Headers,
		agent.TxnHeader{Key: HeaderID, Value: []byte(rec.ID)},
		agent.TxnHeader{Key: HeaderAgent, Value: s.agentB},
		agent.TxnHeader{Key: HeaderPipeline, Value: s.pipeB})
	if len(rec.Source) > 0 {
		out.Headers = append(out.Headers, agent.TxnHeader{Key: HeaderSource, Value: []byte(rec.Source)})
	}
	if rec.EventTime != 0 {
		out.Time = rec.Time()
	}
	return out, nil
}

var _ agent.TxnConfig = (*Config)(nil)

// TxnCluster returns the brokers, and ok with delivery: exactly_once.
func (c *Config) TxnCluster() ([]string, bool) { return c.Brokers, c.Delivery == "exactly_once" }
