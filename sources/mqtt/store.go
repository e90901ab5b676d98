package mqtt

import (
	"strings"
	"sync"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// store is the client's session store (paho.Store), in memory like paho's
// MemoryStore but cheaper on the receive path, which calls it twice per
// QoS 1 message: received PUBLISH packets are not kept. paho keeps them
// from arrival until their PUBACK only to discard them on a reconnect (it
// resumes sent packets and received PUBRELs, never a received PUBLISH), and
// our PUBACK goes out when the batch is durable, so they would only hold
// payloads longer. Everything else (the status messages this client
// publishes, a QoS 2 PUBREL) is kept as paho keeps it. No logging: a delete
// of an absent key is normal here.
type store struct {
	mu   sync.Mutex
	msgs map[string]packets.ControlPacket
}

var _ paho.Store = (*store)(nil)

func newStore() *store { return &store{msgs: map[string]packets.ControlPacket{}} }

// Open does nothing: the store is usable from the start.
func (s *store) Open() {}

// Put keeps m under key, unless it is a received PUBLISH.
func (s *store) Put(key string, m packets.ControlPacket) {
	if _, ok := m.(*packets.PublishPacket); ok && strings.HasPrefix(key, inboundPrefix) {
		return
	}
	s.mu.Lock()
	s.msgs[key] = m
	s.mu.Unlock()
}

// Get returns the packet under key, or nil.
func (s *store) Get(key string) packets.ControlPacket {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.msgs[key]
}

// All returns every key.
func (s *store) All() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]string, 0, len(s.msgs))
	for k := range s.msgs {
		keys = append(keys, k)
	}
	return keys
}

// Del forgets key; an absent key is not an error.
func (s *store) Del(key string) {
	s.mu.Lock()
	delete(s.msgs, key)
	s.mu.Unlock()
}

// Close does nothing: the packets stay for the next connection of this
// client, as with paho's MemoryStore between Connect calls.
func (s *store) Close() {}

// Reset forgets everything.
func (s *store) Reset() {
	s.mu.Lock()
	clear(s.msgs)
	s.mu.Unlock()
}

// inboundPrefix starts the keys paho gives received packets ("i.<id>";
// sent ones are "o.<id>").
const inboundPrefix = "i."
