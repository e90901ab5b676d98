//go:build race

package state

// raceDiv scales down the tests whose size only matters for speed.
const raceDiv = 10
