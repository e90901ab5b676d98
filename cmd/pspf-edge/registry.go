package main

import (
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/operators/changes"
	"github.com/pspf/pspf-edge/operators/deadband"
	"github.com/pspf/pspf-edge/operators/decode"
	"github.com/pspf/pspf-edge/operators/dedup"
	"github.com/pspf/pspf-edge/operators/fields"
	"github.com/pspf/pspf-edge/operators/filter"
	"github.com/pspf/pspf-edge/operators/keyby"
	"github.com/pspf/pspf-edge/operators/mapop"
	"github.com/pspf/pspf-edge/operators/throttle"
	"github.com/pspf/pspf-edge/operators/window"
	"github.com/pspf/pspf-edge/sinks/console"
	"github.com/pspf/pspf-edge/sinks/file"
	httpsink "github.com/pspf/pspf-edge/sinks/http"
	"github.com/pspf/pspf-edge/sinks/kafka"
	mqttsink "github.com/pspf/pspf-edge/sinks/mqtt"
	"github.com/pspf/pspf-edge/sources/gpio"
	"github.com/pspf/pspf-edge/sources/mqtt"
	"github.com/pspf/pspf-edge/sources/serial"
	"github.com/pspf/pspf-edge/sources/simulate"
)

// newRegistry returns the registry of every component this binary has.
// Connectors a build tag can leave out register in a file of their own
// (registry_<connector>.go, with its registry_no<connector>.go).
func newRegistry() *runner.Registry {
	r := runner.NewRegistry()
	r.Sources["simulate"] = simulate.Factory()
	r.Sources["mqtt"] = mqtt.Factory()
	r.Sources["serial"] = serial.Factory()
	r.Sources["gpio"] = gpio.Factory()
	addKafkaSource(r)
	r.Operators["decode"] = decode.Factory()
	r.Operators["filter"] = filter.Factory()
	r.Operators["map"] = mapop.Factory()
	r.Operators["fields"] = fields.Factory()
	r.Operators["key_by"] = keyby.Factory()
	r.Operators["window"] = window.Factory()
	r.Operators["deadband"] = deadband.Factory()
	r.Operators["dedup"] = dedup.Factory()
	r.Operators["throttle"] = throttle.Factory()
	r.Operators["changes"] = changes.Factory()
	r.Sinks["console"] = console.Factory()
	r.Sinks["file"] = file.Factory()
	r.Sinks["kafka"] = kafka.Factory()
	r.Sinks["http"] = httpsink.Factory()
	r.Sinks["mqtt"] = mqttsink.Factory()
	addPostgres(r)
	return r
}
