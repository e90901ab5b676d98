//go:build !no_postgres

package main

import (
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/sinks/postgres"
)

// addPostgres registers the PostgreSQL sink (and pgx); build with -tags no_postgres to leave it out of the binary.
func addPostgres(r *runner.Registry) {
	r.Sinks["postgres"] = postgres.Factory()
}
