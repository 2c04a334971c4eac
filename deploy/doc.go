// Package deploy holds the files that run and watch ledgerd in production,
// and their tests: the systemd unit (checked with systemd-analyze verify),
// the Kubernetes manifests and the Dockerfile (decoded and checked for
// probes, volume, secret and a static non-root binary), the Prometheus
// alert rules (promtool test rules) and the Grafana dashboard; every metric
// the rules and the dashboard name is checked against the /metrics of a
// running ledgerd. The package has no code of its own.
package deploy
