package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/portico/portico/internal/testcert"
)

func TestValidateExpiredCertificateWarnsAndExitsZero(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.NewCA(t)
	cert, key := ca.Issue(t, time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour), "old.example.com").WriteFiles(t, dir, "old")
	path := writeConfig(t, "expired.toml", fmt.Sprintf(`[server]
https_addr = "127.0.0.1:8443"
[[tls.certificates]]
cert_file = %q
key_file = %q
[pools.app]
backends = [{ url = "http://127.0.0.1:9" }]
[[routes]]
pool = "app"
`, cert, key))
	code, stdout, stderr := runCLI(t, "validate", "-config", path)
	if code != 0 || stdout != path+": ok\n" {
		t.Errorf("exit %d, stdout %q; want 0 and ok", code, stdout)
	}
	if want := path + ":4: tls.certificates[0].cert_file: warning: certificate expired on "; !strings.HasPrefix(stderr, want) {
		t.Errorf("stderr = %q, want it to start with %q", stderr, want)
	}
}
