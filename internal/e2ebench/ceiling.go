package e2ebench

import (
	"fmt"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// bareSub is the ceiling: a plain paho subscriber (the client the agent's
// MQTT source is built on) that only accounts for what it receives.
type bareSub struct {
	cl  paho.Client
	acc atomic.Pointer[Accounter]
}

func startBareSub(addr string) (*bareSub, error) {
	s := &bareSub{}
	opts := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("e2ebench-ceiling").
		SetCleanSession(true).SetAutoReconnect(false).SetKeepAlive(60 * time.Second)
	s.cl = paho.NewClient(opts)
	if t := s.cl.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return nil, fmt.Errorf("e2ebench: ceiling subscriber: connect: %v", t.Error())
	}
	t := s.cl.Subscribe("sensors/+/temp", 1, func(_ paho.Client, m paho.Message) {
		if a := s.acc.Load(); a != nil {
			(*a).AddValue(m.Payload(), time.Now())
		}
	})
	if !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		s.cl.Disconnect(0)
		return nil, fmt.Errorf("e2ebench: ceiling subscriber: subscribe: %v", t.Error())
	}
	return s, nil
}

func (s *bareSub) set(a Accounter) {
	if a == nil {
		s.acc.Store(nil)
		return
	}
	s.acc.Store(&a)
}

func (s *bareSub) close() { s.cl.Disconnect(100) }
