package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A running agent says where its admin API listens, so that
// `pspf-edge status` finds it without flags even when it was started with
// --admin 127.0.0.1:0: in DATA_DIR/admin.addr (the address, one line), and
// in the starting user's runtime directory, agentsDir(), as PID.json (the
// address and the data directory), for the agents of a user whose data
// directory status cannot guess. Both go when the agent stops; one that was
// killed leaves them behind, and status ignores an address nobody answers on.
// Neither needs to survive a power cut: the agent writes them at each start.
const adminAddrFile = "admin.addr"

// agentEntry is one running agent as published in agentsDir().
type agentEntry struct {
	Address string `json:"address"`
	DataDir string `json:"data_dir"`
	PID     int    `json:"pid"`
}

// agentsDir is the directory where this user's agents publish their admin
// address: $XDG_RUNTIME_DIR/pspf-edge, else pspf-edge-UID in the temporary
// directory.
func agentsDir() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "pspf-edge")
	}
	return filepath.Join(os.TempDir(), "pspf-edge-"+strconv.Itoa(os.Getuid()))
}

// ownDir reports whether dir is a directory of this user that no one else
// may write to (a shared temporary directory is nobody's to trust).
func ownDir(dir string) bool {
	fi, err := os.Lstat(dir)
	if err != nil || !fi.IsDir() || fi.Mode().Perm()&0o022 != 0 {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Getuid()
}

// publishAdminAddr writes addr where status looks for it, in dataDir and,
// unless it is "", in dir (agentsDir()), and returns the function that
// removes it again. A failure is only logged by the caller: the agent runs
// without it, status then needs --admin.
func publishAdminAddr(dataDir, dir, addr string) (func(), error) {
	var errs []error
	var remove []string
	// Readable by the service's group, like the data (status run by an
	// operator); the runtime directory's entry is the user's own.
	if err := writeReplace(filepath.Join(dataDir, adminAddrFile), []byte(addr+"\n"), 0o640); err != nil {
		errs = append(errs, err)
	} else {
		remove = append(remove, filepath.Join(dataDir, adminAddrFile))
	}
	if dir == "" {
		// The data directory only.
	} else if err := os.MkdirAll(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		errs = append(errs, err)
	} else if !ownDir(dir) {
		errs = append(errs, fmt.Errorf("%s: not a directory of this user only", dir))
	} else {
		abs, _ := filepath.Abs(dataDir)
		b, _ := json.Marshal(agentEntry{Address: addr, DataDir: abs, PID: os.Getpid()})
		p := filepath.Join(dir, strconv.Itoa(os.Getpid())+".json")
		if err := writeReplace(p, append(b, '\n'), 0o600); err != nil {
			errs = append(errs, err)
		} else {
			remove = append(remove, p)
		}
	}
	undo := func() {
		for _, p := range remove {
			os.Remove(p)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return undo, fmt.Errorf("admin: publish the address: %w", err)
	}
	return undo, nil
}

// writeReplace replaces path with data (a temporary file of mode perm
// renamed over it), so that a reader never sees half of it.
func writeReplace(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	os.Remove(tmp) // WriteFile keeps the mode of a file that exists
	if err := os.WriteFile(tmp, data, perm); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// discoverAdmin finds the admin address of the running agent, for status
// without --admin. With an agent file (-c): the address its data directory
// holds, else the file's admin.address. Without one: the agent this user
// started (published in agentsDir) if exactly one answers, an error listing
// them if several do; else the one of the default data directory (the
// packaged service's); else the default address, whose failure then says
// that no agent runs.
func discoverAdmin(ctx context.Context, cfgFile, dataDir, configured string) (string, error) {
	if cfgFile == "" {
		if dir := agentsDir(); ownDir(dir) {
			files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
			var live []agentEntry
			for _, f := range files {
				var e agentEntry
				if b, err := os.ReadFile(f); err == nil && json.Unmarshal(b, &e) == nil && e.Address != "" && answers(ctx, e.Address) {
					live = append(live, e)
				}
			}
			switch {
			case len(live) == 1:
				return live[0].Address, nil
			case len(live) > 1:
				var b strings.Builder
				for _, e := range live {
					fmt.Fprintf(&b, "\n  pspf-edge status --admin %s   (pid %d, data dir %s)", e.Address, e.PID, e.DataDir)
				}
				return "", fmt.Errorf("status: %d agents of this user run; pick one:%s", len(live), b.String())
			}
		}
	}
	if a := readAddrFile(filepath.Join(dataDir, adminAddrFile)); a != "" && answers(ctx, a) {
		return a, nil
	}
	return configured, nil
}

func readAddrFile(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// answers reports whether an admin API answers on addr (a URL, or
// host:port for http) within a second. It asks /healthz, which needs no
// token, and sends nothing else: over https it does not verify the
// certificate, which the request for the status then does.
func answers(ctx context.Context, addr string) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(addr, "/")+"/healthz", nil)
	if err != nil {
		return false
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // a liveness probe that sends no secret
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
