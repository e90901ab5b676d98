//go:build !no_kafka

package fleet

import (
	"testing"

	"github.com/pspf/pspf-edge/internal/testbroker"
)

func TestChannelKafka(t *testing.T) {
	k := testbroker.StartKafka(t)
	c := DefaultConfig()
	c.Channel, c.Kafka.Brokers = ChannelKafka, k.Addrs()
	channelSuite(t, c)
}
