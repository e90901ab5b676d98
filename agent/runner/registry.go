package runner

import (
	"sort"

	"github.com/pspf/pspf-edge/agent"
)

// Registry knows the components a pipeline file may name.
type Registry struct {
	Sources   map[string]agent.Factory[agent.Source]
	Operators map[string]agent.Factory[agent.Operator]
	Sinks     map[string]agent.Factory[agent.Sink]
	// ReadFile reads the files a pipeline file names (TLS certificates and
	// keys) while it is validated: see agent.Node.ReadFile. Nil means os.ReadFile;
	// tests of documentation samples, whose paths exist only on a gateway,
	// replace it.
	ReadFile func(name string) ([]byte, error)
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{
		Sources:   map[string]agent.Factory[agent.Source]{},
		Operators: map[string]agent.Factory[agent.Operator]{},
		Sinks:     map[string]agent.Factory[agent.Sink]{},
	}
}

func names[T any](m map[string]agent.Factory[T]) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
