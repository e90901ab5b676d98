package runner

import (
	"sync"

	"github.com/pspf/pspf-edge/agent"
)

// startup follows a pipeline's first connections, so that whoever started it
// can tell a generation that came up from one that cannot: see Started.
type startup struct {
	once    sync.Once
	mu      sync.Mutex
	pending map[any]bool  // the sources and sinks not connected yet
	err     error         // the setup error that ended the wait, if one did
	done    chan struct{} // closed once pending is empty or err is set
}

// init lists the components to wait for; it runs once, on first use.
func (s *startup) init(p *Pipeline) {
	s.once.Do(func() {
		s.pending = map[any]bool{}
		s.done = make(chan struct{})
		for _, r := range p.sources {
			s.pending[r] = true
		}
		for _, r := range p.sinks {
			s.pending[r] = true
		}
		if p.dead != nil {
			s.pending[p.dead] = true
		}
		if len(s.pending) == 0 {
			close(s.done)
		}
	})
}

// connected records that component c (a *sourceRun or *sinkRun) has
// connected.
func (p *Pipeline) connected(c any) {
	s := &p.setup
	s.init(p)
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.pending[c] {
		return
	}
	delete(s.pending, c)
	if len(s.pending) == 0 && s.err == nil {
		close(s.done)
	}
}

// connectFailed records a failed connect: one marked Permanent, before every
// component has connected once, ends the wait as a setup error. Other
// failures (an outage: refused, timed out, unreachable) are retried and do
// not count.
func (p *Pipeline) connectFailed(err error) {
	if !agent.IsPermanent(err) {
		return
	}
	s := &p.setup
	s.init(p)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil || len(s.pending) == 0 {
		return
	}
	s.err = err
	close(s.done)
}

// Started is closed once every source and sink of the pipeline has
// connected once, or once one of them failed to connect with an error its
// connector marked Permanent (a setup error that retrying cannot fix: TLS
// files gone since validation, credentials or a client certificate the
// destination refuses) before that; SetupErr then returns it. A pipeline
// whose destination is down (connection refused, timeouts) stays not
// started: outages are retried, with backoff, for as long as they last.
// The pipeline keeps retrying after a setup error too; stopping it, and
// running something else, is the caller's decision.
func (p *Pipeline) Started() <-chan struct{} {
	p.setup.init(p)
	return p.setup.done
}

// SetupErr returns the setup error that closed Started, or nil.
func (p *Pipeline) SetupErr() error {
	p.setup.init(p)
	p.setup.mu.Lock()
	defer p.setup.mu.Unlock()
	return p.deps.Secrets.Redact(p.setup.err)
}
