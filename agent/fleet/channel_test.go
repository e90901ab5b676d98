package fleet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/internal/testkit"
)

// bundleServer is an HTTPS server of bundles: PUT stores one, GET serves
// it with an ETag and answers 304 to a matching If-None-Match.
type bundleServer struct {
	mu           sync.Mutex
	bundles      map[string][]byte
	gets, unmods atomic.Int64
	token        string
}

func (s *bundleServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.token != "" && r.Header.Get("Authorization") != "Bearer "+s.token {
		http.Error(w, "no", http.StatusUnauthorized)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch r.Method {
	case http.MethodPut:
		b := make([]byte, r.ContentLength)
		if _, err := r.Body.Read(b); err != nil && int64(len(b)) != r.ContentLength {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.bundles[r.URL.Path] = b
		w.WriteHeader(http.StatusCreated)
	case http.MethodGet:
		s.gets.Add(1)
		b, ok := s.bundles[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		sum := sha256.Sum256(b)
		etag := `"` + hex.EncodeToString(sum[:8]) + `"`
		if r.Header.Get("If-None-Match") == etag {
			s.unmods.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("ETag", etag)
		w.Write(b)
	}
}

func startBundleServer(t *testing.T, token string) (*bundleServer, HTTPSConfig) {
	bs := &bundleServer{bundles: map[string][]byte{}, token: token}
	srv := httptest.NewTLSServer(bs)
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return bs, HTTPSConfig{URL: srv.URL + "/fleet/{target}.bundle", Interval: 30 * time.Millisecond, Token: token, TLS: agent.TLSConfig{CAFile: ca}}
}

// runFleetAgent runs a fleet client for name with labels over c.
func runFleetAgent(t *testing.T, c Config, keys Keyring, name string, labels map[string]string) (*applierEnv, *testkit.LogBuffer) {
	t.Helper()
	return runFleetAgentWith(t, c, keys, name, labels, func(Channel) {})
}

// runFleetAgentWith is runFleetAgent with tweak applied to the channel
// before the agent runs.
func runFleetAgentWith(t *testing.T, c Config, keys Keyring, name string, labels map[string]string, tweak func(Channel)) (*applierEnv, *testkit.LogBuffer) {
	t.Helper()
	e := newApplier(t, keys, "")
	secrets := new(agent.Secrets)
	ch, err := NewChannel(c, Deps{Name: name, Logger: e.log.Logger(slog.LevelDebug), Metrics: e.metrics, Secrets: secrets})
	if err != nil {
		t.Fatal(err)
	}
	tweak(ch)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- NewAgent(AgentConfig{Applier: e.a, Channel: ch, Targets: Targets(name, labels), Logger: e.log.Logger(slog.LevelDebug)}).Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("fleet agent: %v", err)
		}
	})
	return e, e.log
}

func push(t *testing.T, c Config, target string, raw []byte) {
	t.Helper()
	p, err := NewPublisher(c, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Push(ctx, target, raw); err != nil {
		t.Fatalf("push to %s: %v", target, err)
	}
}

// channelSuite is what every channel must do: a bundle pushed before the
// agent starts is applied when it starts; one pushed to its name, then to
// a label, while it runs, too; one for another agent is not; an older one
// is refused.
func channelSuite(t *testing.T, c Config) {
	sk, keys := testKey(t)
	push(t, c, "all", sign(t, sk, 1, File{"a.yaml", pipe("v1")}))
	e, log := runFleetAgent(t, c, keys, "gw-1", map[string]string{"site": "plant-3"})
	version := func(v uint64) func() bool { return func() bool { return e.a.Version() == v } }
	testkit.Eventually(t, 20*time.Second, "version 1 (pushed before the start)", version(1), log)
	push(t, c, "name/gw-2", sign(t, sk, 9, File{"a.yaml", pipe("other agent")}))
	push(t, c, "name/gw-1", sign(t, sk, 2, File{"a.yaml", pipe("v2")}))
	testkit.Eventually(t, 20*time.Second, "version 2 (to its name)", version(2), log)
	push(t, c, "site/plant-3", sign(t, sk, 3, File{"a.yaml", pipe("v3")}, File{"b.yaml", pipe("v3")}))
	testkit.Eventually(t, 20*time.Second, "version 3 (to its label)", version(3), log)
	if got := e.read(t, "b.yaml"); got != string(pipe("v3")) {
		t.Errorf("b.yaml: got %q", got)
	}
	push(t, c, "all", sign(t, sk, 2, File{"a.yaml", pipe("old")}))
	testkit.Eventually(t, 20*time.Second, "the older bundle refused", func() bool {
		r := e.a.Status().LastRefused
		return r != nil && r.Reason == ErrReplay.Error() && r.Version == 2
	}, log)
	if e.a.Version() != 3 {
		t.Errorf("got version %d, want 3 (gw-2's 9 is not for gw-1)", e.a.Version())
	}
}

func TestChannelHTTPS(t *testing.T) {
	bs, hc := startBundleServer(t, "s3cret-token")
	c := DefaultConfig()
	c.Channel, c.HTTPS = ChannelHTTPS, hc
	channelSuite(t, c)
	// Polls of an unchanged bundle are answered 304.
	n := bs.unmods.Load()
	testkit.Eventually(t, 10*time.Second, "304 answers", func() bool { return bs.unmods.Load() > n+3 }, nil)
}

// A wrong token (or a server down) is one WARN, however many polls fail,
// and the token never shows.
func TestChannelHTTPSOutage(t *testing.T) {
	_, hc := startBundleServer(t, "right")
	hc.Token = "wrong-token-value"
	c := DefaultConfig()
	c.Channel, c.HTTPS = ChannelHTTPS, hc
	_, keys := testKey(t)
	e, log := runFleetAgent(t, c, keys, "gw-1", nil)
	testkit.Eventually(t, 10*time.Second, "failed polls counted", func() bool {
		n, _ := strconv.Atoi(e.metric(`pspf_fleet_channel_errors_total{channel="https"}`))
		return n >= 5
	}, log)
	if n := strings.Count(log.String(), "config channel unreachable"); n != 1 {
		t.Errorf("got %d WARN lines for one outage, want 1:\n%s", n, log)
	}
	if strings.Contains(log.String(), "wrong-token-value") {
		t.Errorf("the token is in the log:\n%s", log)
	}
}

func TestConfig(t *testing.T) {
	cases := []struct {
		yaml, want string
	}{
		{"channel: https\npublic_keys: [k.pub]\nhttps: {url: \"https://h/{target}\"}\n", ""},
		{"channel: https\nhttps: {url: \"https://h/{target}\"}\n", "public_keys: must name at least one"},
		{"channel: https\npublic_keys: [k]\nhttps: {url: \"http://example.org/x\"}\n", "must be https://"},
		{"channel: mqtt\npublic_keys: [k]\n", "mqtt.broker: must be set"},
		{"channel: mqtt\npublic_keys: [k]\nmqtt: {broker: tcp://h:1883, topic: fixed}\n", "must hold {target}"},
		{"channel: kafka\npublic_keys: [k]\n", "kafka.brokers: must list"},
		{"channel: smoke\npublic_keys: [k]\n", "channel"},
		{"public_keys: [k]\n", "channel"},
		{"channel: kafka\npublic_keys: [k]\nkafka: {brokers: [h:9092]}\non_conflict: mine\n", "on_conflict"},
	}
	for _, c := range cases {
		n := agent.ParseConfig("agent.yaml", []byte(c.yaml), func(string) (string, bool) { return "", false }, nil)
		_, err := ParseConfig(n)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%q: got %v, want no error", c.yaml, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%q: got %v, want an error with %q", c.yaml, err, c.want)
		}
	}
	if got := Targets("gw", map[string]string{"site": "p3", "role": "boiler"}); strings.Join(got, " ") != "all name/gw role/boiler site/p3" {
		t.Errorf("Targets: got %v", got)
	}
	for _, tg := range []string{"all", "name/gw-1", "site/plant-3"} {
		if err := CheckTarget(tg); err != nil {
			t.Errorf("CheckTarget(%q): %v", tg, err)
		}
	}
	for _, tg := range []string{"", "gw", "a/b/c", "site/+", "/x"} {
		if err := CheckTarget(tg); err == nil {
			t.Errorf("CheckTarget(%q): got nil error", tg)
		}
	}
}
