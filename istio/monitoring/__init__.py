"""The Grafana dashboard and the Prometheus alerts of modelguard on Istio, generated from code."""
