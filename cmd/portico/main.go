// Command portico is the Portico reverse proxy and load balancer. It wires
// the packages together: config is loaded and validated, proxy serves it,
// admin shows it.
package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"

	"golang.org/x/crypto/bcrypt"

	"github.com/portico/portico/config"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = ""

const usage = `Portico is a reverse proxy and load balancer.

Usage:
  portico                        run the quickstart (demo backends, no config needed)
  portico run [-config FILE]     run the proxy (no -config: the quickstart)
  portico reload [-admin URL]    have the running proxy reload its configuration file
  portico validate -config FILE [-diff]
                                 check a configuration file, bind nothing; with -diff,
                                 show what a reload would change in the running proxy
  portico hash-password          read a password on stdin, print its bcrypt hash (basic_auth)
  portico hash-key               read an API key on stdin, print its "sha256:..." (api_key)
  portico version                print the version

Run "portico COMMAND -h" for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 && (args[0] == "" || args[0][0] != '-') {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		return cmdRun(args, stdout, stderr)
	case "validate":
		return cmdValidate(args, stdout, stderr)
	case "reload":
		return cmdReload(args, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "portico", versionString())
		return 0
	case "hash-password", "hash-key":
		return cmdHash(cmd, os.Stdin, stdout, stderr)
	case "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "portico: unknown command %q\n\n%s", cmd, usage)
	return 2
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

// flags returns a flag set that prints its usage to stderr and does not exit.
func flags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: portico %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags returns the exit code to use when parsing ends the command.
func parseFlags(fs *flag.FlagSet, args []string) (exit int, done bool) {
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0, true
	case err != nil:
		return 2, true
	case fs.NArg() > 0:
		fmt.Fprintf(fs.Output(), "portico %s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		fs.Usage()
		return 2, true
	}
	return 0, false
}

func cmdValidate(args []string, stdout, stderr io.Writer) int {
	fs := flags("validate", "validate -config FILE [-diff [-admin URL] [-token T]]", stderr)
	path := fs.String("config", "", "configuration file to check (required)")
	diff := fs.Bool("diff", false, "also show what a reload to FILE would change in the running Portico: exit 0 without changes, 2 with some")
	api := addAdminFlags(fs, "")
	fs.Lookup("admin").Usage = "with -diff: admin API of the running Portico (default: FILE's admin_addr)"
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if *path == "" {
		fmt.Fprintln(stderr, "portico validate: -config FILE is required")
		fs.Usage()
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		printConfigError(stderr, err)
		return 1
	}
	// Warnings do not fail validation: Portico would run.
	printConfigError(stderr, cfg.Warnings)
	fmt.Fprintf(stdout, "%s: ok\n", *path)
	if *diff {
		return diffRunning(cfg, api, stdout, stderr)
	}
	return 0
}

// printConfigError prints each problem on its own line.
func printConfigError(w io.Writer, err error) {
	var ps config.Problems
	if errors.As(err, &ps) {
		for _, p := range ps {
			fmt.Fprintln(w, p.Error())
		}
		return
	}
	fmt.Fprintln(w, err)
}

// cmdHash prints what basic_auth and api_key store instead of a secret:
// a bcrypt hash of a password, or the SHA-256 of an API key. The secret is
// read from stdin (its first line), so that it stays out of shell history.
func cmdHash(cmd string, stdin io.Reader, stdout, stderr io.Writer) int {
	line, err := bufio.NewReader(stdin).ReadString('\n')
	secret := strings.TrimRight(line, "\r\n")
	if secret == "" {
		if err != nil && err != io.EOF {
			fmt.Fprintln(stderr, "portico "+cmd+":", err)
		} else {
			fmt.Fprintln(stderr, "portico "+cmd+": give the secret on stdin, e.g. read -rs S; printf '%s\\n' \"$S\" | portico "+cmd)
		}
		return 2
	}
	if cmd == "hash-key" {
		sum := sha256.Sum256([]byte(secret))
		fmt.Fprintln(stdout, "sha256:"+hex.EncodeToString(sum[:]))
		return 0
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(secret), bcrypt.DefaultCost)
	if err != nil {
		fmt.Fprintln(stderr, "portico hash-password:", err)
		return 1
	}
	fmt.Fprintln(stdout, string(hash))
	return 0
}
