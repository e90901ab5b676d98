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
	"github.com/pspf/pspf-edge/sources/simulate"
)

// newRegistry returns the registry of every component this binary has.
// Connectors a build tag can leave out register in a file of their own
// (registry_<connector>.go, with its registry_no<connector>.go): no_kafka,
// no_kafka_source, no_mqtt, no_http, no_postgres, no_serial, no_gpio
// (README: Building for boards).
func newRegistry() *runner.Registry {
	r := runner.NewRegistry()
	r.Sources["simulate"] = simulate.Factory()
	addMQTT(r)
	addSerial(r)
	addGPIO(r)
	addKafka(r)
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
	addHTTP(r)
	addPostgres(r)
	return r
}
