//go:build no_postgres

package main

import "github.com/pspf/pspf-edge/agent/runner"

// addPostgres does nothing: this binary was built with -tags no_postgres,
// without the PostgreSQL sink.
func addPostgres(*runner.Registry) {}
