package agent

import "fmt"

// Factory builds one kind of component (T is Source, Operator or Sink) from
// its decoded config. The runner's registry (runner.Registry) holds the
// factories a pipeline file may name; it is filled explicitly in
// cmd/pspf-edge, never by package init functions. A connector package
// exports one function that returns its factory.
type Factory[T any] struct {
	// Doc is one line that says what the component does, shown by `schema`.
	Doc string
	// Config returns a new config value (a pointer to a struct) holding the
	// component's defaults; the pipeline file is decoded into it.
	Config func() any
	// New builds the component from the decoded, validated config. It starts
	// no goroutines.
	New func(cfg any, env Env) (T, error)
	// Stateful marks operators that keep per-key state (windows, dedup...):
	// they run after the pipeline log.
	Stateful bool
}

// Typed adapts a constructor over a concrete config type to a Factory: the
// config is made by defaults and handed to build as *C.
func Typed[T any, C any](doc string, defaults func() *C, build func(cfg *C, env Env) (T, error)) Factory[T] {
	return Factory[T]{
		Doc:    doc,
		Config: func() any { return defaults() },
		New: func(cfg any, env Env) (T, error) {
			c, ok := cfg.(*C)
			if !ok {
				var zero T
				return zero, fmt.Errorf("registry: config of type %T, want %T", cfg, (*C)(nil))
			}
			return build(c, env)
		},
	}
}
