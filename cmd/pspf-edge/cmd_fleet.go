package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"github.com/pspf/pspf-edge/agent"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pspf/pspf-edge/agent/fleet"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/internal/atomicfile"
)

func fleetUsage(w io.Writer) {
	fmt.Fprintln(w, `Usage: pspf-edge fleet keygen|sign|push|status ...

  keygen [-o PREFIX]                   a new ed25519 key pair: PREFIX.key (private,
                                       mode 0600, never leaves the signing machine)
                                       and PREFIX.pub (give it to the agents:
                                       fleet.public_keys); PREFIX defaults to "fleet"
  sign DIR --key KEY -o BUNDLE [--version N] [--no-validate]
                                       sign the pipeline files of DIR (*.yaml, *.yml)
                                       as a bundle; N must grow from one bundle to the
                                       next (default: the Unix time in seconds). Each
                                       file is validated first, as an agent would

  push BUNDLE --to TARGET [--to TARGET...] -c AGENT_FILE [--timeout 30s]
                                       publish the bundle for TARGET (all, name/NAME,
                                       LABEL/VALUE) over the channel of AGENT_FILE's
                                       fleet section: a retained MQTT message, a
                                       compacted Kafka record keyed by TARGET, or an
                                       HTTPS PUT to its URL
  status -c AGENT_FILE [--json] [--wait 3s]
                                       every agent's latest heartbeat, read from where
                                       AGENT_FILE's fleet.heartbeat.sink sends them
                                       (MQTT retained topic, or a Kafka topic): last
                                       seen, versions, pipelines, backlog, outage,
                                       rollbacks and refusals

docs/fleet.md describes bundles, channels and rollbacks.`)
}

func cmdFleet(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fleetUsage(stderr)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	switch args[0] {
	case "keygen":
		return fleetKeygen(args[1:], stdout, stderr)
	case "sign":
		return fleetSign(args[1:], stdout, stderr)
	case "push":
		return fleetPush(args[1:], stdout, stderr)
	case "status":
		return fleetStatus(args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "pspf-edge fleet: unknown command %q\n\n", args[0])
	fleetUsage(stderr)
	return exitUsage
}

func fleetKeygen(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fleet keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fleetUsage(stderr) }
	prefix := fs.String("o", "fleet", "write PREFIX.key and PREFIX.pub")
	if err := parseFlags(fs, args); err != nil {
		return usageExit(err)
	}
	if fs.NArg() != 0 {
		fleetUsage(stderr)
		return exitUsage
	}
	keyFile, pubFile := *prefix+".key", *prefix+".pub"
	for _, f := range []string{keyFile, pubFile} {
		if _, err := os.Stat(f); err == nil {
			fmt.Fprintf(stderr, "fleet keygen: %s exists; not overwritten\n", f)
			return exitProblem
		}
	}
	priv, pub, err := fleet.GenerateKey()
	if err == nil {
		err = atomicfile.WriteDurable(keyFile, priv, 0o600)
	}
	if err == nil {
		err = atomicfile.WriteDurable(pubFile, pub, 0o644)
	}
	if err != nil {
		fmt.Fprintf(stderr, "fleet keygen: %v\n", err)
		return exitFailure
	}
	pk, _ := fleet.ParsePublicKey(pub)
	fmt.Fprintf(stdout, "key %s: private %s, public %s\n", fleet.KeyID(pk), keyFile, pubFile)
	return exitOK
}

func fleetSign(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fleet sign", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fleetUsage(stderr) }
	keyFile := fs.String("key", "", "private key file (from fleet keygen)")
	out := fs.String("o", "", "bundle file to write")
	version := fs.Uint64("version", 0, "bundle version; must grow (default: the Unix time in seconds)")
	noValidate := fs.Bool("no-validate", false, "sign files that do not validate here (a connector this binary lacks)")
	if err := parseFlags(fs, args); err != nil {
		return usageExit(err)
	}
	if fs.NArg() != 1 || *keyFile == "" || *out == "" {
		fleetUsage(stderr)
		return exitUsage
	}
	if *version == 0 {
		*version = uint64(time.Now().Unix())
	}
	data, err := os.ReadFile(*keyFile)
	if err != nil {
		fmt.Fprintf(stderr, "fleet sign: %v\n", err)
		return exitProblem
	}
	key, err := fleet.ParsePrivateKey(data)
	if err != nil {
		fmt.Fprintf(stderr, "fleet sign: %v\n", err)
		return exitProblem
	}
	paths, err := runner.PipelineFiles(fs.Arg(0))
	if err != nil {
		fmt.Fprintf(stderr, "fleet sign: %v\n", err)
		return exitProblem
	}
	var files []fleet.File
	var invalid []error
	reg := newRegistry()
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			fmt.Fprintf(stderr, "fleet sign: %v\n", err)
			return exitProblem
		}
		if !*noValidate {
			if _, err := reg.ParsePipeline(p, b, runner.DefaultAgentConfig().Defaults); err != nil {
				invalid = append(invalid, err)
			}
		}
		files = append(files, fleet.File{Name: filepath.Base(p), Data: b})
	}
	if len(invalid) > 0 {
		fmt.Fprintf(stderr, "fleet sign: not signed: %v\n", errors.Join(invalid...))
		return exitProblem
	}
	bundle, err := fleet.Sign(*version, time.Now(), files, key)
	if err == nil {
		err = atomicfile.WriteDurable(*out, bundle, 0o644)
	}
	if err != nil {
		fmt.Fprintf(stderr, "fleet sign: %v\n", err)
		return exitProblem
	}
	fmt.Fprintf(stdout, "bundle %s: version %d, %d files, key %s, %d bytes\n", *out, *version, len(files), fleet.KeyID(key.Public().(ed25519.PublicKey)), len(bundle))
	return exitOK
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func fleetPush(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fleet push", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fleetUsage(stderr) }
	var targets listFlag
	fs.Var(&targets, "to", "target: all, name/NAME or LABEL/VALUE (repeatable)")
	cfgPath := fs.String("c", "", "agent file whose fleet section names the channel")
	timeout := fs.Duration("timeout", 30*time.Second, "how long the push may take")
	if err := parseFlags(fs, args); err != nil {
		return usageExit(err)
	}
	if fs.NArg() != 1 || len(targets) == 0 || *cfgPath == "" {
		fleetUsage(stderr)
		return exitUsage
	}
	for _, t := range targets {
		if err := fleet.CheckTarget(t); err != nil {
			fmt.Fprintln(stderr, err)
			return exitUsage
		}
	}
	cfg, err := loadAgentConfig(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitProblem
	}
	fc, _ := fleetConfig(cfg)
	if fc == nil {
		fmt.Fprintf(stderr, "fleet push: %s has no fleet section\n", *cfgPath)
		return exitProblem
	}
	raw, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		fmt.Fprintf(stderr, "fleet push: %v\n", err)
		return exitProblem
	}
	// Only a signed bundle is worth sending: the agents check the key.
	if _, err := fleet.Decode(raw, nil); !errors.Is(err, fleet.ErrUnknownKey) {
		fmt.Fprintf(stderr, "fleet push: %s: not a signed bundle: %v\n", fs.Arg(0), err)
		return exitProblem
	}
	secrets := new(agent.Secrets)
	secrets.Add(agent.SecretValues(fc)...)
	p, err := fleet.NewPublisher(*fc, fleet.Deps{Name: cfg.Name, Secrets: secrets})
	if err != nil {
		fmt.Fprintln(stderr, secrets.Text(err.Error()))
		return exitProblem
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	for _, t := range targets {
		if err := p.Push(ctx, t, raw); err != nil {
			fmt.Fprintf(stderr, "fleet push: to %s: %s\n", t, secrets.Text(err.Error()))
			return exitFailure
		}
		fmt.Fprintf(stdout, "pushed %s to %s over %s\n", filepath.Base(fs.Arg(0)), t, fc.Channel)
	}
	return exitOK
}
