package fleet

import (
	"slices"
	"strings"
	"testing"

	"github.com/pspf/pspf-edge/agent"
)

// A channel the build tags left out (no_mqtt, no_kafka) is refused by the
// config check and by NewChannel and NewPublisher, naming the tag; the
// others are accepted.
// (TestBuildTags in cmd/pspf-edge builds the binary with each tag.)
func TestChannelsLeftOut(t *testing.T) {
	tags := map[string]string{ChannelMQTT: "no_mqtt", ChannelKafka: "no_kafka"}
	for _, ch := range []string{ChannelHTTPS, ChannelMQTT, ChannelKafka} {
		yaml := "channel: " + ch + "\npublic_keys: [k.pub]\nhttps: {url: \"https://h/{target}\"}\nmqtt: {broker: \"tcp://127.0.0.1:1\"}\nkafka: {brokers: [\"127.0.0.1:1\"]}\n"
		n := agent.ParseConfig("agent.yaml", []byte(yaml), func(string) (string, bool) { return "", false }, nil)
		c, err := ParseConfig(n)
		_, cerr := NewChannel(c, Deps{})
		p, perr := NewPublisher(c, Deps{})
		if perr == nil {
			p.Close()
		}
		if !slices.Contains(Channels(), ch) {
			want := "-tags " + tags[ch]
			for what, err := range map[string]error{"config": err, "NewChannel": cerr, "NewPublisher": perr} {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("%s, channel %s left out: got %v, want an error with %q", what, ch, err, want)
				}
			}
			continue
		}
		for what, err := range map[string]error{"config": err, "NewChannel": cerr, "NewPublisher": perr} {
			if err != nil {
				t.Errorf("%s, channel %s: %v", what, ch, err)
			}
		}
	}
}
