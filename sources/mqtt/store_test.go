package mqtt

import (
	"slices"
	"testing"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

func TestStoreKeepsAllButReceivedPublish(t *testing.T) {
	s := newStore()
	s.Open()
	pub := func(id uint16) packets.ControlPacket {
		p := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
		p.MessageID, p.Qos = id, 1
		return p
	}
	rel := packets.NewControlPacket(packets.Pubrel).(*packets.PubrelPacket)
	rel.MessageID = 9
	s.Put("i.7", pub(7)) // a received QoS 1 PUBLISH: not kept
	s.Put("i.9", rel)    // a received QoS 2 PUBREL: kept
	s.Put("o.3", pub(3)) // a sent PUBLISH (status message): kept
	if got := s.Get("i.7"); got != nil {
		t.Errorf("received PUBLISH kept: %v", got)
	}
	if s.Get("i.9") != rel || s.Get("o.3") == nil {
		t.Fatalf("PUBREL or sent PUBLISH not kept")
	}
	keys := s.All()
	slices.Sort(keys)
	if !slices.Equal(keys, []string{"i.9", "o.3"}) {
		t.Errorf("All() = %v, want [i.9 o.3]", keys)
	}
	s.Del("i.7") // absent: no error, nothing else goes
	s.Del("o.3")
	s.Close()
	s.Open() // what was kept survives a reconnect
	if s.Get("i.9") != rel || s.Get("o.3") != nil {
		t.Errorf("after Del and a reconnect: i.9=%v o.3=%v, want the PUBREL and nil", s.Get("i.9"), s.Get("o.3"))
	}
	s.Reset()
	if n := len(s.All()); n != 0 {
		t.Errorf("after Reset %d keys, want 0", n)
	}
}
