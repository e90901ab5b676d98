package decode

import (
	"bytes"

	"github.com/pspf/pspf-edge/agent"
)

// line makes the payload, without one trailing line break, a string field.
func (d *Decoder) line(data []byte, r *agent.Record) error {
	data = bytes.TrimSuffix(data, []byte("\n"))
	data = bytes.TrimSuffix(data, []byte("\r"))
	return d.add(r, agent.String(d.cfg.Field, utf8String(data)))
}

// raw makes the payload, verbatim, a string field.
func (d *Decoder) raw(data []byte, r *agent.Record) error {
	return d.add(r, agent.String(d.cfg.Field, string(data)))
}
