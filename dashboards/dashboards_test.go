// Package dashboards holds the Grafana dashboard and the Prometheus alert
// rules for Portico; these tests check them with promtool and Grafana's
// dashboard model. That every metric they use exists is checked against a
// running Portico in cmd/portico.
package dashboards

import (
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// promtool returns the path of promtool (Debian's prometheus package),
// skipping the test without it, or failing it in CI, which installs it.
func promtool(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool not found; CI installs it (apt-get install prometheus)")
		}
		t.Skip("promtool not found: apt-get install prometheus to check the alert rules")
	}
	return path
}

func TestAlertRulesPassPromtool(t *testing.T) {
	tool := promtool(t)
	for _, args := range [][]string{{"check", "rules", "alerts.yml"}, {"test", "rules", "alerts_test.yml"}} {
		out, err := exec.Command(tool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// The alerts the issue asks for are all there.
func TestAlertRulesCoverTheSituations(t *testing.T) {
	data, err := os.ReadFile("alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"PorticoBackendDown", "PorticoPoolDown", "PorticoHighErrorRatio", "PorticoHighLatency",
		"PorticoCertificateExpiringSoon", "PorticoReloadFailed", "PorticoAccessLogDropping", "PorticoRedisDown"} {
		if !strings.Contains(string(data), "alert: "+name+"\n") {
			t.Errorf("alerts.yml has no %s", name)
		}
	}
}

type panel struct {
	Type       string  `json:"type"`
	Title      string  `json:"title"`
	Datasource *source `json:"datasource"`
	Targets    []struct {
		Datasource *source `json:"datasource"`
		Expr       string  `json:"expr"`
	} `json:"targets"`
}

type source struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// Every panel queries the data source the user picks in the dashboard's
// variable, so that the dashboard imports into any Grafana.
func TestGrafanaDashboardUsesTheDatasourceVariable(t *testing.T) {
	data, err := os.ReadFile("grafana.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title      string `json:"title"`
		UID        string `json:"uid"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
		Panels []panel `json:"panels"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("grafana.json: %v", err)
	}
	if d.Title == "" || d.UID == "" {
		t.Error("dashboard without title or uid")
	}
	if len(d.Templating.List) == 0 || d.Templating.List[0].Name != "datasource" || d.Templating.List[0].Type != "datasource" || d.Templating.List[0].Query != "prometheus" {
		t.Errorf("first variable = %+v, want a Prometheus datasource variable", d.Templating.List)
	}
	var all strings.Builder
	for _, p := range d.Panels {
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" || len(p.Targets) == 0 {
			t.Errorf("panel %q does not query ${datasource}", p.Title)
		}
		for _, tg := range p.Targets {
			if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" || tg.Expr == "" {
				t.Errorf("panel %q has a target without ${datasource} or expression", p.Title)
			}
			all.WriteString(tg.Expr + "\n")
		}
	}
	// The views the issue asks for.
	for _, metric := range []string{"portico_requests_total", "portico_request_duration_seconds_bucket", "portico_backend_up",
		"portico_backend_ejections_total", "portico_retries_total", "portico_rejections_total", "portico_certificate_expiry_timestamp_seconds"} {
		if !strings.Contains(all.String(), metric) {
			t.Errorf("no panel queries %s", metric)
		}
	}
}
