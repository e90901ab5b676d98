package agent_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/pspf/pspf-edge/agent"
)

func TestRedactText(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"tcp://user:s3cret@broker:1883", "tcp://user:xxxxx@broker:1883"},
		{`connect to "ssl://u:p@ss@h:8883/x?y": refused`, `connect to "ssl://u:xxxxx@h:8883/x?y": refused`},
		{"https://TOKEN@example.test/path", "https://xxxxx@example.test/path"},
		{"brokers [tcp://a:b@h1:1 tcp://h2:2]", "brokers [tcp://a:xxxxx@h1:1 tcp://h2:2]"},
		{"http://host/path?a=b@c", "http://host/path?a=b@c"},
		{"no url, mail a@b", "no url, mail a@b"},
		{"tcp://user:xxxxx@h", "tcp://user:xxxxx@h"}, // masked twice is masked once
		{"a://x:y@h b://z:w@i", "a://x:xxxxx@h b://z:xxxxx@i"},
		{"://@", "://xxxxx@"},
	} {
		if got := agent.RedactText(tc.in); got != tc.want {
			t.Errorf("RedactText(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got := agent.RedactURL("mqtts://dev:pw@h:8883"); got != "mqtts://dev:xxxxx@h:8883" {
		t.Errorf("RedactURL = %q", got)
	}
}

// TestSecretsText masks a registered value in every form it takes: as is,
// escaped in a URL, quoted by %q.
func TestSecretsText(t *testing.T) {
	var s agent.Secrets
	s.Add("p@ss w\"rd/1", "", "tok")
	for _, in := range []string{
		"password p@ss w\"rd/1 refused",
		"tcp://u:" + "p%40ss%20w%22rd%2F1" + "@h",
		fmt.Sprintf("got %q", "p@ss w\"rd/1"),
		"q=p%40ss+w%22rd%2F1",
		"bearer tok",
	} {
		got := s.Text(in)
		for _, leak := range []string{"p@ss", "ss w", "p%40ss", "tok"} {
			if strings.Contains(got, leak) {
				t.Errorf("Text(%q) = %q: still holds %q", in, got, leak)
			}
		}
		if !strings.Contains(got, agent.Mask) {
			t.Errorf("Text(%q) = %q: no mask", in, got)
		}
	}
	// A secret holding another is masked whole, not around the shorter one.
	var s2 agent.Secrets
	s2.Add("abc", "xabcx")
	if got := s2.Text("=xabcx="); got != "="+agent.Mask+"=" {
		t.Errorf("Text = %q, want =%s=", got, agent.Mask)
	}
	var none *agent.Secrets
	none.Add("ignored")
	if got := none.Text("ignored tcp://u:p@h"); got != "ignored tcp://u:xxxxx@h" {
		t.Errorf("nil Secrets: Text = %q", got)
	}
}

func TestSecretsRedact(t *testing.T) {
	var s agent.Secrets
	s.Add("hunter2")
	base := errors.New("auth failed for hunter2")
	err := s.Redact(agent.Permanent(fmt.Errorf("sink: %w", base)))
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("Redact: %q holds the secret", err)
	}
	if !errors.Is(err, base) || !agent.IsPermanent(err) {
		t.Errorf("Redact lost the chain: Is %v, IsPermanent %v", errors.Is(err, base), agent.IsPermanent(err))
	}
	clean := errors.New("nothing here")
	if got := s.Redact(clean); got != clean {
		t.Errorf("Redact(clean) = %v, want the same error", got)
	}
	if s.Redact(nil) != nil {
		t.Error("Redact(nil) != nil")
	}
}

func TestSecretValues(t *testing.T) {
	type inner struct {
		Token string `secret:"true"`
		Plain string
	}
	type cfg struct {
		Password string            `secret:"true"`
		User     string            // not secret
		Headers  map[string]string `secret:"true"`
		List     []string          `secret:"true"`
		Nested   inner
		Ptr      *inner
		Many     []inner
		Empty    string `secret:"true"`
	}
	c := &cfg{Password: "pw", User: "me", Headers: map[string]string{"X-Key": "hk"}, List: []string{"l1"},
		Nested: inner{Token: "t1", Plain: "p"}, Ptr: &inner{Token: "t2"}, Many: []inner{{Token: "t3"}}}
	got := agent.SecretValues(c)
	want := map[string]bool{"pw": true, "hk": true, "l1": true, "t1": true, "t2": true, "t3": true}
	if len(got) != len(want) {
		t.Fatalf("SecretValues = %q, want %d values", got, len(want))
	}
	for _, v := range got {
		if !want[v] {
			t.Errorf("SecretValues returned %q, not a secret", v)
		}
	}
}

// TestRedactHandler masks the message and every kind of attribute, in
// With and in groups.
func TestRedactHandler(t *testing.T) {
	var s agent.Secrets
	s.Add("hunter2")
	var buf bytes.Buffer
	h := agent.RedactHandler(slog.NewTextHandler(&buf, nil), &s)
	if agent.RedactHandler(h, &s) != h {
		t.Error("RedactHandler wrapped a redacting handler twice")
	}
	log := slog.New(h).With("url", "tcp://u:pw@h").WithGroup("g")
	log.Info("login hunter2 failed",
		"err", errors.New("bad password hunter2"),
		"brokers", []string{"tcp://a:b@h"},
		slog.Group("sub", "tok", "hunter2"),
		"n", 42)
	out := buf.String()
	for _, leak := range []string{"hunter2", ":pw@", ":b@"} {
		if strings.Contains(out, leak) {
			t.Errorf("log line holds %q: %s", leak, out)
		}
	}
	if !strings.Contains(out, "g.n=42") {
		t.Errorf("log line lost an attribute: %s", out)
	}
}

// FuzzRedactText: any text is masked without a panic, masking again
// changes nothing, and a URL password put in it never survives.
func FuzzRedactText(f *testing.F) {
	for _, s := range []string{"tcp://u:p@h", "a://@", "x://a:b@c/d@e", "://:@", "http://h/p?q=a@b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		once := agent.RedactText(s)
		if twice := agent.RedactText(once); twice != once {
			t.Fatalf("RedactText not stable: %q -> %q -> %q", s, once, twice)
		}
		in := s + " tcp://user:Zq9SECRET@host "
		if strings.Contains(agent.RedactText(in), "Zq9SECRET") {
			t.Fatalf("password survives in %q", agent.RedactText(in))
		}
	})
}
