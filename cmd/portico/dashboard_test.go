package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// chromium returns the path of Debian's chromium, skipping the test
// without it, or failing it in CI, which installs it.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium not found; CI installs it (apt-get install chromium)")
	}
	t.Skip("chromium not found: apt-get install chromium to test the dashboard in a browser")
	return ""
}

// browser starts headless chromium and returns a context for driving one
// tab, and what the page logged as errors.
func browser(t *testing.T) (context.Context, func() []string) {
	t.Helper()
	path := chromium(t)
	// Not t.TempDir: chromium's helper processes may still write to their
	// profile for a moment after the browser exits, which fails its check.
	profile, err := os.MkdirTemp("", "portico-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1400, 1300),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		// Without these chromium reaches for Google's servers, which this
		// machine's network refuses.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 60*time.Second)
	t.Cleanup(func() {
		cancelTimeout()
		cancelTab()
		cancelAlloc()
		for range 20 {
			if os.RemoveAll(profile) == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	var mu sync.Mutex
	var errs []string
	chromedp.ListenTarget(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch e := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.APITypeError || e.Type == runtime.APITypeAssert {
				var args []string
				for _, a := range e.Args {
					args = append(args, string(a.Value)+a.Description)
				}
				errs = append(errs, "console: "+strings.Join(args, " "))
			}
		case *runtime.EventExceptionThrown:
			errs = append(errs, "exception: "+e.ExceptionDetails.Error())
		case *cdplog.EventEntryAdded:
			if e.Entry.Level == cdplog.LevelError {
				errs = append(errs, "log: "+e.Entry.Text+" "+e.Entry.URL)
			}
		}
	})
	if err := chromedp.Run(ctx, cdplog.Enable()); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), errs...)
	}
}

// evalUntil evaluates js until it yields true, or fails after d.
func evalUntil(t *testing.T, ctx context.Context, what, js string, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		var ok bool
		if err := chromedp.Run(ctx, chromedp.Evaluate(js, &ok)); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if ok {
			return time.Since(start)
		}
		if time.Since(start) > d {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The dashboard in a real browser: it loads without errors, shows the
// pools, charts the traffic sent through the proxy, and shows a stopped
// backend down within 5 s. The screenshot is kept as a test artifact.
func TestDashboardInBrowser(t *testing.T) {
	ctx, pageErrors := browser(t)
	o := startObserved(t)

	if err := chromedp.Run(ctx,
		chromedp.Navigate("http://"+o.addrs.admin+"/"),
		chromedp.WaitVisible(`#pools [data-pool="web"]`, chromedp.ByQuery),
	); err != nil {
		t.Fatalf("loading the dashboard: %v", err)
	}
	var pools []string
	if err := chromedp.Run(ctx, chromedp.Evaluate(`[...document.querySelectorAll("#pools [data-pool]")].map(e => e.dataset.pool)`, &pools)); err != nil {
		t.Fatal(err)
	}
	if strings.Join(pools, ",") != "flaky,web" {
		t.Errorf("pools on the page = %v, want flaky and web", pools)
	}

	for range 40 {
		o.send(t, "web.test", "/")
	}
	evalUntil(t, ctx, "requests in the rate chart", `window.portico.charts.rate.data[1].some(v => v > 0)`, 10*time.Second)
	evalUntil(t, ctx, "the route in the routes table", `[...document.querySelectorAll("#routes tr")].some(r => r.dataset.route === "web" && r.cells[4].textContent !== "–")`, 15*time.Second)

	o.spare.kill()
	badge := fmt.Sprintf(`(document.querySelector('#pools tr[data-backend="http://%s"] .badge') || {}).textContent === "down"`, o.spare.addr)
	took := evalUntil(t, ctx, "the stopped backend shown down", badge, 5*time.Second)
	t.Logf("stopped backend shown down after %v", took.Round(10*time.Millisecond))
	evalUntil(t, ctx, "the transition listed", `document.querySelector("#transitions tbody").textContent.includes("up → down")`, 5*time.Second)

	var png []byte
	if err := chromedp.Run(ctx, chromedp.FullScreenshot(&png, 100)); err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(t.ArtifactDir(), "dashboard.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes; go test -artifacts keeps it)", shot, len(png))

	if errs := pageErrors(); len(errs) > 0 {
		t.Errorf("the page logged errors:\n%s", strings.Join(errs, "\n"))
	}
}
