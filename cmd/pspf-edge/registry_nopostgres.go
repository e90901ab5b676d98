//go:build no_postgres

package main

import "github.com/pspf/pspf-edge/agent/runner"

// addPostgres adds nothing: this binary was built with -tags no_postgres.
func addPostgres(*runner.Registry) {}
