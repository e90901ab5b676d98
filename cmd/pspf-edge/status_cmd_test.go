package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/agent/supervisor"
)

// get returns the body of an admin API path.
func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The admin API and the status command of a running agent: 400 readings, a
// filter drops every fourth one, the destination is down. /readyz, /metrics
// (the agent's and the process's), /api/v1/pipelines and the status table
// say so; an invalid save makes status exit 1 and say why.
func TestAdminAndStatusCommand(t *testing.T) {
	const file = `sources:
  - simulate: {sensors: 1, rate: 200, count: 400, format: fields, shape: steady}
operators:
  - filter: {expr: "seq % 4 != 0"}
sinks:
  - down: {}
    retry: {initial: 50ms, max: 100ms}
`
	a := startAgent(t, map[string]string{"m.yaml": file}, "127.0.0.1:0")
	addr, err := os.ReadFile(filepath.Join(a.data, adminAddrFile))
	if err != nil {
		t.Fatalf("admin address not published: %v", err)
	}
	url := "http://" + strings.TrimSpace(string(addr))
	a.waitFor("every reading through the filter", func() bool { return a.view("m").BacklogRecords == 300 })

	if got := get(t, url+"/readyz"); got != "ready\n" {
		t.Errorf("/readyz = %q, want ready", got)
	}
	text := get(t, url+"/metrics")
	for _, s := range []string{"go_goroutines", "process_open_fds", "process_resident_memory_bytes"} {
		if !strings.Contains(text, "\n"+s+" ") {
			t.Errorf("/metrics has no %s", s)
		}
	}
	for _, want := range []string{
		`pspf_dropped_total{pipeline="m",component="filter",reason="filtered"} 100`,
		`pspf_sink_online{pipeline="m",component="down"} 0`,
	} {
		if !strings.Contains(text, "\n"+want+"\n") {
			t.Errorf("/metrics has no line %s", want)
		}
	}
	var api struct{ Pipelines []supervisor.PipelineView }
	if err := json.Unmarshal([]byte(get(t, url+"/api/v1/pipelines")), &api); err != nil || len(api.Pipelines) != 1 || api.Pipelines[0].Name != "m" || api.Pipelines[0].Drops["filtered"] != 100 {
		t.Errorf("/api/v1/pipelines: %v, %+v; want pipeline m with 100 records filtered", err, api)
	}
	var table, errOut bytes.Buffer
	if code := cmdStatus([]string{"--admin", url}, &table, &errOut); code != exitOK {
		t.Errorf("status exit %d, want 0\n%s%s", code, table.String(), errOut.String())
	}
	if !strings.Contains(table.String(), "offline") || strings.Count(table.String(), "destination down") != 2 {
		t.Errorf("status: want the sink offline and the error on the pipeline and sink rows:\n%s", table.String())
	}

	writeFile(t, filepath.Join(a.dir, "m.yaml"), "sources: [\n")
	a.waitFor("the reload failure", func() bool { return a.view("m").ReloadFailures == 1 })
	var out bytes.Buffer
	if code := cmdStatus([]string{"--admin", url}, &out, &errOut); code != exitProblem {
		t.Errorf("status exit %d, want %d (a reload failed)\n%s%s", code, exitProblem, out.String(), errOut.String())
	}
	for _, want := range []string{"PIPELINE", "m ", "filtered=100", "sink down", "offline", "the last change was not applied", "invalid YAML"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status output has no %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if code := cmdStatus([]string{"--admin", url, "--json"}, &out, &errOut); code != exitOK {
		t.Errorf("status --json exit %d, want 0: %s", code, errOut.String())
	}
	var resp struct{ Pipelines []supervisor.PipelineView }
	if err := json.Unmarshal(out.Bytes(), &resp); err != nil || len(resp.Pipelines) != 1 || resp.Pipelines[0].Generation != 1 {
		t.Errorf("status --json: %v, %+v", err, resp)
	}
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
}

// `buffer drop` refuses while an agent holds the data directory, asks for
// --yes, then removes what a pipeline left on disk.
func TestBufferDropUnderARunningAgent(t *testing.T) {
	a := startAgent(t, map[string]string{"r.yaml": "sources:\n  - simulate: {format: fields, rate: 200}\nsinks:\n  - down: {}\n"}, "")
	a.waitFor("a backlog", func() bool { return a.view("r").BacklogRecords > 0 })
	var out, errOut bytes.Buffer
	if code := cmdBuffer([]string{"drop", "r", "--yes", "--data-dir", a.data}, &out, &errOut); code != exitProblem || !strings.Contains(errOut.String(), "refused while an agent runs") {
		t.Errorf("drop under a running agent: exit %d, %q; want %d, refused", code, errOut.String(), exitProblem)
	}
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	errOut.Reset()
	if code := cmdBuffer([]string{"drop", "r", "--data-dir", a.data}, &out, &errOut); code != exitProblem || !strings.Contains(errOut.String(), "--yes") {
		t.Errorf("drop without --yes: exit %d, %q; want %d, asking for --yes", code, errOut.String(), exitProblem)
	}
	if code := cmdBuffer([]string{"drop", "r", "--yes", "--data-dir", a.data}, &out, &errOut); code != exitOK {
		t.Fatalf("drop: exit %d: %s", code, errOut.String())
	}
	if _, err := os.Stat(filepath.Join(a.data, "pipelines", "r")); !os.IsNotExist(err) {
		t.Errorf("after drop: %v, want the directory gone", err)
	}
}

// The TO CAP column of a blocked log says so, with the reason.
func TestStatusShowsABlockedLog(t *testing.T) {
	for _, reason := range []string{"max_bytes", "disk_full"} {
		var out bytes.Buffer
		printStatus(&out, []supervisor.PipelineView{{Name: "m", State: supervisor.StateRunning, BlockedSince: time.Now().Add(-3 * time.Second), BlockedReason: reason}})
		if !regexp.MustCompile(`blocked 3(\.\d)?s ` + reason).MatchString(out.String()) {
			t.Errorf("status output has no %q:\n%s", "blocked 3s "+reason, out.String())
		}
	}
}

// TestStatusPartitions prints a pipeline that keeps its state per Kafka
// partition: the group, its generation, the partitions with their lag,
// and a restore's progress line.
func TestStatusPartitions(t *testing.T) {
	var out strings.Builder
	printStatus(&out, []supervisor.PipelineView{{Name: "fleet-rollup", State: supervisor.StateRunning,
		Partitions: &runner.PartitionsStatus{Group: "rollup", Generation: 7, Lag: 12,
			Owned:     []runner.OwnedPartition{{Topic: "tele", Partition: 0, Lag: 12}, {Topic: "tele", Partition: 3}},
			Restoring: []runner.RestoreStatus{{Topic: "tele", Partition: 3, From: 0, At: 1200, End: 5000, Records: 830, Since: time.Now()}}}}})
	for _, want := range []string{"group rollup", "gen 7", "2 partitions", "lag 12", "tele[0]=12 tele[3]=0", "restoring tele[3]", "1200/5000 changelog offsets, 830 records"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("got:\n%s\nwant it to contain %q", out.String(), want)
		}
	}
}
