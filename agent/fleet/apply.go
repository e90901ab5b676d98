package fleet

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/internal/atomicfile"
)

// Conflict policies: what wins when a file a bundle would replace or
// remove was edited on the gateway since the last bundle wrote it (or a
// file of the bundle's name exists that no bundle wrote).
const (
	// ConflictLocal refuses the bundle and keeps the local files; the
	// conflict is reported. The default: nothing local is overwritten.
	ConflictLocal = "local"
	// ConflictBundle writes the bundle over the local files, logging each
	// one it overwrites.
	ConflictBundle = "bundle"
)

// ApplierConfig is what an Applier is built from.
type ApplierConfig struct {
	// PipelinesDir is the directory the supervisor watches.
	PipelinesDir string
	// StateDir holds the applier's state: the bundle running, the one
	// before it, the highest version seen. Created if missing.
	StateDir string
	// Keys are the public keys bundles must be signed with.
	Keys Keyring
	// Validate checks one pipeline file as the supervisor would
	// (file is its path in PipelinesDir); nil checks nothing.
	Validate func(file string, data []byte) error
	// OnConflict is ConflictLocal (the default) or ConflictBundle.
	OnConflict string
	// Logger and Metrics receive the refusals and applications.
	Logger  *slog.Logger
	Metrics *runner.Metrics
	// Now is the clock of the status; nil means time.Now.
	Now func() time.Time
}

// Applier verifies bundles and writes them into the pipelines directory,
// where the supervisor's hot reload picks them up. It keeps the previous
// bundle, to go back to (Rollback). It is safe for concurrent use.
type Applier struct {
	c         ApplierConfig
	applied   *agent.Counter
	rollbacks *agent.Counter

	mu         sync.Mutex
	st         state
	warned     map[string]bool // hashes of the refused contents warned about (at most maxWarned)
	lastRefuse *Refusal
}

// Refusal is the last bundle refused, as status shows it.
type Refusal struct {
	At      time.Time `json:"at"`
	Reason  string    `json:"reason"`
	Error   string    `json:"error"`
	Version uint64    `json:"version,omitempty"`
}

// state is what StateDir/state.json holds.
type state struct {
	// Current is the bundle in the pipelines directory; Previous the one
	// before it (zero if none).
	Current  applied `json:"current"`
	Previous applied `json:"previous"`
	// Highest is the highest version ever applied: a bundle must be above
	// it, also after a rollback to an older one.
	Highest uint64 `json:"highest"`
	// RolledBack is the version rolled back from, and why; empty when the
	// current bundle was applied, not restored.
	RolledBack       uint64 `json:"rolled_back,omitempty"`
	RolledBackReason string `json:"rolled_back_reason,omitempty"`
	// Healthy is the last version whose pipelines all came up within the
	// grace period: a current version above it is still on trial, also
	// after a restart.
	Healthy uint64 `json:"healthy,omitempty"`
}

// applied is one bundle as written: its version, identity and the SHA-256
// of each file it wrote, to tell a local edit from our own write.
type applied struct {
	Version uint64            `json:"version,omitempty"`
	Hash    string            `json:"hash,omitempty"`
	KeyID   string            `json:"key_id,omitempty"`
	Files   map[string]string `json:"files,omitempty"`
}

// maxWarned bounds the refused bundles remembered so as not to warn about
// them again: retained bundles of several targets come again together on
// every reconnect, and each is warned about once.
const maxWarned = 64

const (
	stateFile    = "state.json"
	currentFile  = "current.bundle"
	previousFile = "previous.bundle"
	pendingFile  = "pending.bundle"
)

// NewApplier returns an applier; Open loads its state.
func NewApplier(c ApplierConfig) *Applier {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Metrics == nil {
		c.Metrics = runner.NewMetrics()
	}
	if c.OnConflict == "" {
		c.OnConflict = ConflictLocal
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	a := &Applier{c: c, applied: c.Metrics.Counter("pspf_fleet_bundles_applied_total"),
		rollbacks: c.Metrics.Counter("pspf_fleet_rollbacks_total")}
	c.Metrics.Gauge("pspf_fleet_bundle_version", func() float64 { return float64(a.Version()) })
	return a
}

// Open loads the state and completes a bundle whose writing a crash or a
// power cut interrupted: the files of pending.bundle are written again.
func (a *Applier) Open() error {
	if err := os.MkdirAll(a.c.StateDir, 0o750); err != nil {
		return fmt.Errorf("fleet: state dir: %w", err)
	}
	data, err := os.ReadFile(filepath.Join(a.c.StateDir, stateFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("fleet: state: %w", err)
	default:
		if err := json.Unmarshal(data, &a.st); err != nil {
			return fmt.Errorf("fleet: state %s: %w", filepath.Join(a.c.StateDir, stateFile), err)
		}
	}
	pending, err := os.ReadFile(filepath.Join(a.c.StateDir, pendingFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("fleet: pending bundle: %w", err)
	}
	b, err := Decode(pending, a.c.Keys)
	if err != nil {
		// Not ours to finish (a key removed meanwhile): drop it.
		a.c.Logger.Warn("fleet: an interrupted bundle no longer verifies; dropped", "err", err)
		return os.Remove(filepath.Join(a.c.StateDir, pendingFile))
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.c.Logger.Info("fleet: completing a bundle interrupted while being written", "version", b.Version)
	if b.Version < a.st.Current.Version {
		// Older than the current one: a rollback was being written.
		return a.writeLocked(b, pending, false, "rolled back; completed after a restart")
	}
	return a.writeLocked(b, pending, true, "")
}

// Version returns the version of the bundle in the pipelines directory; 0
// for none.
func (a *Applier) Version() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st.Current.Version
}

// Files returns the pipeline file names the current bundle wrote.
func (a *Applier) Files() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Sorted(maps.Keys(a.st.Current.Files))
}

// Status is the applier's part of the agent's status and heartbeat.
type Status struct {
	Version         uint64 `json:"bundle_version"`
	Hash            string `json:"bundle_hash,omitempty"`
	PreviousVersion uint64 `json:"previous_bundle_version,omitempty"`
	// RolledBack is the version that was rolled back from, with why.
	RolledBack       uint64   `json:"rolled_back_from,omitempty"`
	RolledBackReason string   `json:"rolled_back_reason,omitempty"`
	LastRefused      *Refusal `json:"last_refused,omitempty"`
	// OnTrial says the current bundle's pipelines have not all come up
	// yet: it is rolled back if they do not within the grace period.
	OnTrial bool `json:"on_trial,omitempty"`
}

// Status returns the applier's status.
func (a *Applier) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := Status{Version: a.st.Current.Version, Hash: a.st.Current.Hash, PreviousVersion: a.st.Previous.Version,
		RolledBack: a.st.RolledBack, RolledBackReason: a.st.RolledBackReason, OnTrial: a.onTrialLocked()}
	if a.lastRefuse != nil {
		r := *a.lastRefuse
		st.LastRefused = &r
	}
	return st
}

// Apply verifies raw as a bundle and, if it is newer than every bundle
// seen, valid and without conflicts, writes it into the pipelines
// directory. It returns whether it wrote it: the bundle already running
// is no error and writes nothing (a retained message comes again on every
// connect). A refusal is a *RefusedError, counted, and logged once per
// content.
func (a *Applier) Apply(raw []byte) (bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	b, err := Decode(raw, a.c.Keys)
	if err == nil && b.Hash == a.st.Current.Hash {
		return false, nil
	}
	if err == nil {
		err = a.checkLocked(b)
	}
	if err == nil {
		err = a.writeLocked(b, raw, true, "")
	}
	if err != nil {
		a.refusedLocked(raw, b, err)
		return false, err
	}
	a.applied.Inc()
	a.c.Logger.Info("fleet: bundle applied", "version", b.Version, "key", b.KeyID, "files", len(b.Files), "previous_version", a.st.Previous.Version)
	return true, nil
}

// refusedLocked reports a refusal: a metric every time, a WARN once per
// refused content, the status.
func (a *Applier) refusedLocked(raw []byte, b *Bundle, err error) {
	reason := reasonOf(err)
	a.c.Metrics.Counter("pspf_fleet_bundles_refused_total", "reason", reason).Inc()
	r := &Refusal{At: a.c.Now(), Reason: reason, Error: err.Error()}
	if b != nil {
		r.Version = b.Version
	}
	a.lastRefuse = r
	h := hashOf(raw)
	if a.warned[h] {
		return
	}
	if len(a.warned) >= maxWarned || a.warned == nil {
		a.warned = map[string]bool{} // forget: a bundle warned about long ago may warn again
	}
	a.warned[h] = true
	a.c.Logger.Warn("fleet: bundle refused; the pipelines stay as they are", "reason", reason, "version", r.Version, "err", err)
}

// checkLocked decides whether b may be applied: a version above every one
// seen, every file valid, no local edit in the way (unless the bundle
// wins).
func (a *Applier) checkLocked(b *Bundle) error {
	if b.Version <= a.st.Highest {
		return refuse(ErrReplay, "version %d is not above %d, the highest this agent has applied", b.Version, a.st.Highest)
	}
	if a.c.Validate != nil {
		var msgs []string
		for _, f := range b.Files {
			if err := a.c.Validate(filepath.Join(a.c.PipelinesDir, f.Name), f.Data); err != nil {
				msgs = append(msgs, err.Error())
			}
		}
		if len(msgs) > 0 {
			return refuse(ErrInvalid, "%s", strings.Join(msgs, "; "))
		}
	}
	conflicts, err := a.conflictsLocked(b)
	if err != nil {
		return err
	}
	if len(conflicts) == 0 {
		return nil
	}
	if a.c.OnConflict == ConflictBundle {
		a.c.Logger.Warn("fleet: files edited on this gateway are overwritten by the bundle (on_conflict: bundle)", "version", b.Version, "files", strings.Join(conflicts, ", "))
		return nil
	}
	return refuse(ErrConflict, "edited on this gateway since the last bundle wrote them, and on_conflict is local: %s", strings.Join(conflicts, ", "))
}

// conflictsLocked lists the files b would replace or remove that are not
// as the last bundle wrote them: edited, removed or created locally.
func (a *Applier) conflictsLocked(b *Bundle) ([]string, error) {
	ours := a.st.Current.Files
	var out []string
	byPipeline := map[string]string{}
	entries, err := runner.PipelineFiles(a.c.PipelinesDir)
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	for _, e := range entries {
		byPipeline[runner.PipelineName(e)] = filepath.Base(e)
	}
	check := func(name string) {
		want, managed := ours[name]
		got, err := fileHash(filepath.Join(a.c.PipelinesDir, name))
		switch {
		case err != nil:
			out = append(out, name+" (unreadable: "+err.Error()+")")
		case managed && got != want && got == "":
			out = append(out, name+" (removed locally)")
		case managed && got != want:
			out = append(out, name+" (edited locally)")
		case !managed && got != "":
			out = append(out, name+" (a local file)")
		}
	}
	names := map[string]bool{}
	for _, f := range b.Files {
		names[f.Name] = true
		check(f.Name)
		// A local file of the same pipeline under the other extension.
		if other, ok := byPipeline[runner.PipelineName(f.Name)]; ok && other != f.Name {
			if _, managed := ours[other]; !managed {
				out = append(out, other+" (a local file of the same pipeline)")
			}
		}
	}
	for name := range ours {
		if !names[name] {
			check(name) // to be removed
		}
	}
	slices.Sort(out)
	return out, nil
}

// fileHash returns the SHA-256 of a file, "" if it does not exist.
func fileHash(path string) (string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:]), nil
}

// writeLocked writes b's files and removes those of the current bundle it
// does not have, then records it as current. The bundle is first saved as
// pending.bundle, which Open finishes after a crash. newer says b is a new
// bundle (the current one becomes previous); a rollback passes false and
// the version it undoes in rolledBack.
func (a *Applier) writeLocked(b *Bundle, raw []byte, newer bool, rolledBack string) error {
	sd := a.c.StateDir
	if err := atomicfile.WriteDurable(filepath.Join(sd, pendingFile), raw, 0o600); err != nil {
		return fmt.Errorf("fleet: save bundle: %w", err)
	}
	files := map[string]string{}
	for _, f := range b.Files {
		if err := atomicfile.Write(filepath.Join(a.c.PipelinesDir, f.Name), f.Data, 0o640); err != nil {
			return fmt.Errorf("fleet: write %s: %w", f.Name, err)
		}
		sum := sha256.Sum256(f.Data)
		files[f.Name] = hex.EncodeToString(sum[:])
	}
	for name := range a.st.Current.Files {
		if _, keep := files[name]; keep {
			continue
		}
		if err := os.Remove(filepath.Join(a.c.PipelinesDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("fleet: remove %s: %w", name, err)
		}
	}
	if err := atomicfile.SyncDir(a.c.PipelinesDir); err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	next := a.st
	cur := applied{Version: b.Version, Hash: b.Hash, KeyID: b.KeyID, Files: files}
	if newer && a.st.Current.Hash != b.Hash {
		next.Previous = a.st.Current
		next.RolledBack, next.RolledBackReason = 0, ""
		if old, err := os.ReadFile(filepath.Join(sd, currentFile)); err == nil {
			if err := atomicfile.Write(filepath.Join(sd, previousFile), old, 0o600); err != nil {
				return fmt.Errorf("fleet: keep previous bundle: %w", err)
			}
		}
	}
	if !newer && rolledBack != "" {
		next.Previous = applied{}
		next.RolledBack, next.RolledBackReason = a.st.Current.Version, rolledBack
		next.Healthy = b.Version
	}
	next.Current = cur
	next.Highest = max(next.Highest, b.Version)
	if err := atomicfile.Write(filepath.Join(sd, currentFile), raw, 0o600); err != nil {
		return fmt.Errorf("fleet: save bundle: %w", err)
	}
	st, err := json.Marshal(next)
	if err != nil {
		return fmt.Errorf("fleet: state: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(sd, stateFile), st, 0o600); err != nil {
		return fmt.Errorf("fleet: state: %w", err)
	}
	if err := os.Remove(filepath.Join(sd, pendingFile)); err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	if err := atomicfile.SyncDir(sd); err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	a.st = next
	return nil
}

// hashOf returns the SHA-256 of b, hex.
func hashOf(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func (a *Applier) onTrialLocked() bool {
	return a.st.Current.Version != 0 && a.st.Current.Version != a.st.Healthy && a.st.RolledBackReason == ""
}

// Trial returns the version on trial and its pipelines (name -> SHA-256
// of its file), or 0 if the current bundle is proven or restored.
func (a *Applier) Trial() (uint64, map[string]string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.onTrialLocked() {
		return 0, nil
	}
	pipes := map[string]string{}
	for name, h := range a.st.Current.Files {
		pipes[runner.PipelineName(name)] = h
	}
	return a.st.Current.Version, pipes
}

// Healthy records that version's pipelines all came up: it is no longer
// on trial.
func (a *Applier) Healthy(version uint64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.st.Current.Version != version {
		return nil // superseded
	}
	next := a.st
	next.Healthy = version
	if err := a.saveStateLocked(next); err != nil {
		return err
	}
	a.c.Logger.Info("fleet: bundle running: every pipeline is up", "version", version)
	return nil
}

func (a *Applier) saveStateLocked(next state) error {
	b, err := json.Marshal(next)
	if err != nil {
		return fmt.Errorf("fleet: state: %w", err)
	}
	if err := atomicfile.WriteDurable(filepath.Join(a.c.StateDir, stateFile), b, 0o600); err != nil {
		return fmt.Errorf("fleet: state: %w", err)
	}
	a.st = next
	return nil
}

// Rollback brings the previous bundle back because version failed
// (reason): its files are written again, those of version only removed,
// and version stays the highest seen, so that it is not applied again
// when its message comes again. Files edited locally since version was
// written are a conflict, handled as on_conflict says. A rollback is
// logged, counted (pspf_fleet_rollbacks_total) and shown in Status. It
// does nothing if version is no longer the current bundle.
func (a *Applier) Rollback(version uint64, reason string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.st.Current.Version != version {
		return nil
	}
	err := a.rollbackLocked(version, reason)
	if err != nil {
		// Nothing to go back to: the failed bundle stays, and says so.
		next := a.st
		next.RolledBackReason = reason + "; not rolled back: " + err.Error()
		if serr := a.saveStateLocked(next); serr != nil {
			err = errors.Join(err, serr)
		}
		a.c.Logger.Error("fleet: bundle failed and cannot be rolled back; it stays", "version", version, "reason", reason, "err", err)
		return err
	}
	a.rollbacks.Inc()
	a.c.Logger.Warn("fleet: bundle rolled back: the previous bundle runs again", "version", version, "restored_version", a.st.Current.Version, "reason", reason)
	return nil
}

func (a *Applier) rollbackLocked(version uint64, reason string) error {
	if a.st.Previous.Version == 0 {
		return errors.New("no previous bundle")
	}
	raw, err := os.ReadFile(filepath.Join(a.c.StateDir, previousFile))
	if err != nil {
		return fmt.Errorf("previous bundle: %w", err)
	}
	b, err := Decode(raw, a.c.Keys)
	if err != nil {
		return fmt.Errorf("previous bundle: %w", err)
	}
	conflicts, err := a.conflictsLocked(b)
	if err != nil {
		return err
	}
	if len(conflicts) > 0 {
		if a.c.OnConflict != ConflictBundle {
			return fmt.Errorf("edited on this gateway since version %d was written, and on_conflict is local: %s", version, strings.Join(conflicts, ", "))
		}
		a.c.Logger.Warn("fleet: files edited on this gateway are overwritten by the rollback (on_conflict: bundle)", "files", strings.Join(conflicts, ", "))
	}
	return a.writeLocked(b, raw, false, reason)
}
