// Package supervisor keeps the agent's pipelines in step with their files:
// one pipeline per file of the pipelines directory, each run by the runtime
// (agent/runner) as a numbered generation.
//
// The directory is watched (fsnotify, with a debounce). A new file starts
// a pipeline; a changed one is parsed and validated first, and only a
// valid one replaces the running generation (alone: the other pipelines
// never pause): the old generation stops without delivering its backlog,
// and the new one resumes from the same logs and cursors. A removed file's
// pipeline drains for removed_drain_timeout and stops.
// A reloaded generation is on probation until its components have all
// connected once: a setup error rolls it back to the config that ran
// before. A pipeline that cannot start or fails is started again with
// backoff. The agent file is followed too: the log level and the timeouts
// change live, the rest is reported as needing a restart. A signal on
// Run's hup channel (SIGHUP) reloads everything.
//
// The supervisor tells the service manager where it is (Deps.Notify:
// READY=1, RELOADING=1, STOPPING=1) and feeds its watchdog from its own
// loop, also while a reload waits for a generation to stop, up to that
// stop's bound. Views and Ready are what the admin API serves.
package supervisor
