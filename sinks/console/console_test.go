package console

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/sources/simulate"
)

func sample() []agent.Record {
	at := time.Date(2026, 11, 28, 1, 2, 3, 450e6, time.UTC).UnixNano()
	return []agent.Record{
		{ID: "p:1", Key: "s1", EventTime: at, Fields: []agent.Field{agent.String("sensor", "s1"), agent.Float("temp", 21.5), agent.Bool("ok", true)}},
		{ID: "p:2", RecvTime: at, Raw: []byte("raw line")},
	}
}

func TestText(t *testing.T) {
	var out bytes.Buffer
	s := New(Config{Format: "text"}, &out)
	if err := s.Write(context.Background(), sample()); err != nil {
		t.Fatal(err)
	}
	want := "2026-11-28T01:02:03.450Z [s1] sensor=s1 temp=21.5 ok=true\n2026-11-28T01:02:03.450Z raw line\n"
	if out.String() != want {
		t.Errorf("got %q, want %q", out.String(), want)
	}
}

func TestNDJSON(t *testing.T) {
	var out bytes.Buffer
	s := New(Config{Format: "ndjson"}, &out)
	if err := s.Write(context.Background(), sample()); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2", len(lines))
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	if m["_id"] != "p:1" || m["_key"] != "s1" || m["temp"] != 21.5 || m["ok"] != true || m["_time"] != "2026-11-28T01:02:03.45Z" {
		t.Errorf("got %v", m)
	}
	if err := json.Unmarshal([]byte(lines[1]), &m); err != nil || m["_raw"] != "raw line" {
		t.Errorf("got %v (%v), want _raw", m, err)
	}
}

func TestREADMESample(t *testing.T) {
	reg := runner.NewRegistry()
	reg.Sources["simulate"] = simulate.Factory()
	reg.Sinks["console"] = Factory()
	agenttest.CheckREADMESamples(t, "README.md", reg)
}
