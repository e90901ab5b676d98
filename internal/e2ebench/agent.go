package e2ebench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// DefaultAgentCmd runs this repository's agent on the harness's pipeline.
const DefaultAgentCmd = "bin/pspf-edge run -p {pipeline} --data-dir {data} --admin {admin} --log-level warn"

// AgentSpec names an agent under test and the command that runs it. The
// command is split on spaces (no shell, no quoting) after these placeholders
// are replaced:
//
//	{pipeline}  pipelines/bench/KIND.yaml (absolute path)
//	{kind}      passthrough or window
//	{mqtt}      tcp://127.0.0.1:PORT of the MQTT broker ({mqtt_addr}: host:port)
//	{mqtt_tls}  ssl://127.0.0.1:PORT of its TLS listener (Config.MQTTTLS; else empty)
//	{mqtt_ca}   the PEM file of the CA of that listener's certificate
//	{kafka}     host:port of the Kafka broker
//	{topic}     the Kafka topic the counter reads
//	{data}      an empty data directory for this session
//	{admin}     a free loopback host:port for an admin API with pspf-edge's
//	            /api/v1/pipelines (backlog); without {admin} no backlog is read
//	{dir}       the session's scratch directory
//
// The same values are in the environment as PSPF_BENCH_MQTT, PSPF_BENCH_KAFKA,
// PSPF_BENCH_TOPIC, PSPF_BENCH_MQTT_TLS and PSPF_BENCH_MQTT_CA. The command must exec the agent itself (its CPU and
// memory are read from /proc of the process started).
type AgentSpec struct {
	Name string `json:"name"`
	Cmd  string `json:"cmd"`
}

// agentProc is a running agent under test.
type agentProc struct {
	*proc
	admin   string // host:port, "" without an admin API
	started time.Time
	hc      *http.Client
}

func startAgent(ctx context.Context, spec AgentSpec, kind, pipelinesDir, dir string, mq *mosquitto, kb *kafkaBroker, topic string) (*agentProc, error) {
	adminPort, err := freePort()
	if err != nil {
		return nil, err
	}
	pipeline, err := filepath.Abs(filepath.Join(pipelinesDir, kind+".yaml"))
	if err != nil {
		return nil, fmt.Errorf("e2ebench: %w", err)
	}
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, fmt.Errorf("e2ebench: %w", err)
	}
	vars := map[string]string{
		"pipeline": pipeline, "kind": kind, "mqtt": "tcp://" + mq.addr(), "mqtt_addr": mq.addr(),
		"kafka": kb.addr(), "topic": topic, "data": data, "dir": dir,
		"admin": "127.0.0.1:" + strconv.Itoa(adminPort), "mqtt_tls": "", "mqtt_ca": mq.caFile,
	}
	if mq.tlsPort != 0 {
		vars["mqtt_tls"] = "ssl://127.0.0.1:" + strconv.Itoa(mq.tlsPort)
	}
	argv := strings.Fields(expand(spec.Cmd, vars))
	if len(argv) == 0 {
		return nil, fmt.Errorf("e2ebench: agent %q: empty command", spec.Name)
	}
	env := []string{"PSPF_BENCH_MQTT=" + vars["mqtt"], "PSPF_BENCH_KAFKA=" + vars["kafka"], "PSPF_BENCH_TOPIC=" + topic,
		"PSPF_BENCH_MQTT_TLS=" + vars["mqtt_tls"], "PSPF_BENCH_MQTT_CA=" + vars["mqtt_ca"]}
	p, err := startProc(spec.Name, argv, env, filepath.Join(dir, "agent.log"))
	if err != nil {
		return nil, err
	}
	a := &agentProc{proc: p, started: time.Now(), hc: &http.Client{Timeout: 2 * time.Second}}
	if strings.Contains(spec.Cmd, "{admin}") {
		a.admin = vars["admin"]
	}
	return a, nil
}

// backlog returns the summed backlog of the agent's pipelines in bytes and
// records from pspf-edge's /api/v1/pipelines; ok is false without one.
func (a *agentProc) backlog(ctx context.Context) (bytes int64, records uint64, ok bool) {
	if a.admin == "" {
		return 0, 0, false
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+a.admin+"/api/v1/pipelines", nil)
	if err != nil {
		return 0, 0, false
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return 0, 0, false
	}
	defer resp.Body.Close()
	var v struct {
		Pipelines []struct {
			BacklogRecords uint64 `json:"backlog_records"`
			BacklogBytes   int64  `json:"backlog_bytes"`
		} `json:"pipelines"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&v) != nil {
		return 0, 0, false
	}
	for _, p := range v.Pipelines {
		bytes += p.BacklogBytes
		records += p.BacklogRecords
	}
	return bytes, records, true
}
